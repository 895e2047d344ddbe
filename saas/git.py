"""Git for the node and the CLI: which repositories may be fetched, the environment git runs with, the askpass
that hands it a token, cloning, and keeping the token out of what is shown.

Sources. By default: https and ssh (`ssh://` or `user@host:path`) to public addresses only. Local paths,
`file://`, plain http and hosts at addresses that are not public (loopback, private, link-local, shared, reserved,
multicast; IPv4 and IPv6, IPv4 inside IPv6 too) only with the node setting `allow_local_git` (`saas-cli service
--allow-local-git`). Host names are resolved and every address is checked; git then connects to exactly the
addresses checked (curl's resolve list for https, ssh's HostName), so a name cannot turn into loopback between the
check and the fetch; http redirects are not followed; other transports (`ext::`, `fd::`, `git://`, ...) never.
A refusal is `GitSourceRefusedError` (403) and names the setting, never what a host resolved to or what exists on
the node.

Credentials. A GitHub token reaches git through `GIT_ASKPASS` (`askpass_env`: a script that reads it from the
environment of that one git process), never the command line or a file; `redact` takes it out of git's output.

Everything here may block (DNS, git): call it in a worker thread. GitPython is imported only by `clone`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from saas.core.errors import AuthorisationError, DORError, InvalidInputError, SaaSError, UnreachableError

if TYPE_CHECKING:
    from saas.core.schemas import GithubCredentials

__all__ = [
    "CloneError",
    "GitSource",
    "GitSourceRefusedError",
    "RepositoryPathError",
    "UnsupportedSourceError",
    "askpass_env",
    "clone",
    "git_env",
    "is_public",
    "parse_source",
    "redact",
    "repo_folder",
]

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


# -- credentials, clone, paths ---------------------------------------------------------------------------------

ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$SAAS_GIT_USERNAME" ;;
  *) printf '%s\\n' "$SAAS_GIT_PASSWORD" ;;
esac
"""


def askpass_env(folder: Path, credentials: GithubCredentials) -> dict[str, str]:
    """Write `folder/askpass.sh` (owner-only; it reads the secret from its environment and holds none itself) and
    return what to add to git's environment so git asks it for the login and the token."""
    askpass = folder / "askpass.sh"
    askpass.write_text(ASKPASS)
    askpass.chmod(stat.S_IRWXU)
    return {
        "GIT_ASKPASS": str(askpass),
        "SAAS_GIT_USERNAME": credentials.login,
        "SAAS_GIT_PASSWORD": credentials.token(),
    }


def redact(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` (a token git may echo) replaced by `***`."""
    return text.replace(secret, "***") if secret else text


class CloneError(SaaSError):
    """git clone failed. `stderr` is git's own output, kept out of `reason` and `details` (it can tell what exists
    on the machine, and may echo a token): the caller decides who sees it."""

    def __init__(self, stderr: str) -> None:
        super().__init__("git clone failed")
        self.stderr = stderr


def clone(
    source: str,
    dest: Path,
    env: dict[str, str],
    *,
    checkout: bool = True,
    timeout: float | None = None,
    cwd: Path | None = None,
) -> None:
    """`git clone [--no-checkout] -- source dest` run in `cwd` (default: this process's; a relative local source is
    relative to it) with `env` added to this process's environment, killed after `timeout` seconds; raises
    `CloneError`. Blocks."""
    import os

    import git

    command = ["git", "clone", "--quiet", *([] if checkout else ["--no-checkout"]), "--", source, str(dest)]
    try:
        git.Git(str(cwd) if cwd is not None else os.getcwd()).execute(
            command, env={**os.environ, **env}, kill_after_timeout=timeout
        )
    except git.GitCommandError as e:
        raise CloneError(str(e.stderr or "")) from None


class RepositoryPathError(InvalidInputError):
    """A folder given inside a repository is not one (absolute, or leaving it with `..`)."""


def repo_folder(path: str) -> PurePosixPath:
    """`path` as a folder inside a repository (not absolute, no `..`, no NUL); raises `RepositoryPathError`."""
    folder = PurePosixPath(path)
    if folder.is_absolute() or ".." in folder.parts or "\x00" in path:
        raise RepositoryPathError(f"Invalid processor path '{path}': must be a folder inside the repository")
    return folder
