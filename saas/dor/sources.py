"""Which git repositories a node fetches (add-gpp, deploy), and the environment git fetches them with.

By default: https and ssh (`ssh://` or `user@host:path`) to public addresses only. Local paths, `file://`, plain
http and hosts at addresses that are not public (loopback, private, link-local, shared, reserved, multicast; IPv4
and IPv6, IPv4 inside IPv6 too) only with the node setting `allow_local_git` (`saas-cli service
--allow-local-git`). Host names are resolved and every address is checked; git then connects to exactly the
addresses checked (curl's resolve list for https, ssh's HostName), so a name cannot turn into loopback between the
check and the fetch; http redirects are not followed; other transports (`ext::`, `fd::`, `git://`, ...) never.
A refusal is `GitSourceRefusedError` (403) and names the setting, never what a host resolved to or what exists on
the node. Everything here may block (DNS): call it in a worker thread.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from saas.core.errors import AuthorisationError, DORError, InvalidInputError, UnreachableError

__all__ = ["GitSource", "GitSourceRefusedError", "UnsupportedSourceError", "git_env", "parse_source"]

HINT = "the node owner can allow them with --allow-local-git"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HELPER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")  # git's `<transport>::<address>` (ext::, fd::, ...)
_SCP = re.compile(r"^(?:[^@/:\[\]]+@)?(\[[^\]/]+\]|[^:/\[\]@]+):")  # [user@]host:path, host may be [v6]
_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")
_KINDS = ("https", "ssh", "http", "file")


class UnsupportedSourceError(DORError, InvalidInputError):
    """The repository is not something this node fetches with git (other transports, malformed URLs)."""


class GitSourceRefusedError(DORError, AuthorisationError):
    """The repository is a kind of source this node does not allow (local, plain http, not a public address)."""


@dataclass(frozen=True)
class GitSource:
    kind: str  # "https", "ssh", "http", "file" or "local" (a path)
    host: str | None = None
    port: int | None = None


def parse_source(source: str) -> GitSource:
    """What git would make of `source`: its transport and host (raises `UnsupportedSourceError`)."""
    if not source or source.startswith("-") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in source):
        raise UnsupportedSourceError("Unsupported repository: not a git URL or path")
    if _HELPER.match(source):
        raise UnsupportedSourceError("Unsupported repository transport (use https or ssh)")
    scheme = _SCHEME.match(source)
    if scheme is not None:
        kind = scheme.group(1).lower()
        if kind not in _KINDS:
            raise UnsupportedSourceError(f"Unsupported repository protocol '{kind}' (use https or ssh)")
        if kind == "file":
            return GitSource("file")
        try:
            parts = urlsplit(source)
            host, port = parts.hostname, parts.port
        except ValueError:
            raise UnsupportedSourceError("Unsupported repository: malformed URL") from None
        return GitSource(kind, _checked_host(host), port)
    if source.lower().startswith("file:"):
        return GitSource("file")
    colon, slash = source.find(":"), source.find("/")
    if colon < 0 or 0 <= slash < colon:  # git's rule for a local path
        return GitSource("local")
    scp = _SCP.match(source)
    if scp is None:
        raise UnsupportedSourceError("Unsupported repository: malformed ssh address (use user@host:path)")
    return GitSource("ssh", _checked_host(scp.group(1).strip("[]")))


def _checked_host(host: str | None) -> str:
    if not host:
        raise UnsupportedSourceError("Unsupported repository: the URL names no host")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return host
    except ValueError:
        pass
    if not _HOST_NAME.match(host):
        raise UnsupportedSourceError("Unsupported repository: invalid host name")
    return host


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A globally routable unicast address (an IPv4 address inside IPv6, mapped or 6to4, is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return is_public(inner)
    return address.is_global and not (address.is_multicast or address.is_reserved)


def _public_addresses(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise UnreachableError(f"Could not resolve the repository host '{host}'") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses or not all(is_public(ipaddress.ip_address(a.split("%", 1)[0])) for a in addresses):
        raise GitSourceRefusedError(
            f"This node fetches git repositories only from public addresses; '{host}' is not one ({HINT})",
            {"setting": "allow_local_git"},
        )
    return addresses


def git_env(source: str, allow_local: bool) -> dict[str, str]:
    """The environment (to add to git's) for fetching `source` as this node allows; raises
    `UnsupportedSourceError` (400), `GitSourceRefusedError` (403) or `UnreachableError` (a host that does not
    resolve). Blocks (DNS)."""
    target = parse_source(source)
    if not allow_local and target.kind in ("local", "file"):
        raise GitSourceRefusedError(
            f"This node does not fetch git repositories from local paths or file:// URLs ({HINT})",
            {"setting": "allow_local_git"},
        )
    if not allow_local and target.kind == "http":
        raise GitSourceRefusedError(f"This node fetches git repositories over https or ssh, not http ({HINT})")
    config = {"http.followRedirects": "false"}  # a public URL must not redirect git to anywhere else
    ssh = "ssh -o BatchMode=yes"
    if target.host is not None and not allow_local:
        port = target.port or (443 if target.kind == "https" else 22)
        addresses = _public_addresses(target.host, port)
        if target.kind == "https":
            pinned = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
            config["http.curloptResolve"] = f"{target.host}:{port}:{pinned}"
        else:
            ssh += f" -o HostName={shlex.quote(addresses[0])} -o HostKeyAlias={shlex.quote(target.host)}"
    env = {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "https:ssh:http:file" if allow_local else "https:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_SSH_COMMAND": ssh,
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for i, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env
