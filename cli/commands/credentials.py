"""`saas-cli identity credentials`: SSH and GitHub credentials kept in the keystore.

SSH credentials are named; GitHub credentials are keyed by repository URL (as `keystore.github_credentials`
is). Secrets are never printed. `test` runs a real check: an `ssh` login, or an authenticated git-over-HTTPS
request to the repository; a test never reports success it did not see.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from saas.core.errors import (
    AuthenticationError,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    RemoteError,
    SaaSError,
    UnreachableError,
)
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.core.schemas import GithubCredentials, SSHCredentials

__all__ = ["check_github_access", "check_ssh_login", "register"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SSH_TIMEOUT = 30.0
HTTP_TIMEOUT = 15.0


def _valid_name(value: str) -> bool | str:
    return bool(_NAME.match(value)) or "Use 1-64 letters, digits, '.', '_' or '-'"


def _valid_url(value: str) -> bool | str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "Enter an http(s) URL of the repository, e.g. https://github.com/owner/repo"
    if parts.username or parts.password:
        return "Do not put credentials in the URL"
    return True


def _not_blank(value: str) -> bool | str:
    return bool(value.strip()) or "must not be empty"


def _checked(value: str, check: Any, field: str) -> str:
    verdict = check(value)
    if verdict is not True:
        raise InvalidInputError(f"Invalid {field}: {verdict}", {"field": field})
    return value


def normalise_repository_url(url: str) -> str:
    return url.strip().rstrip("/")


# -- real checks -----------------------------------------------------------------------------------


def check_ssh_login(credentials: SSHCredentials, temp_dir: Path) -> None:
    """Log in with `ssh` and run `true`. Raises with ssh's own error output on failure."""
    host, port = credentials.host_and_port()
    target = f"{credentials.login}@{host}"
    fd, key_file = _private_temp_file(temp_dir)
    try:
        key = credentials.private_key()
        os.write(fd, (key if key.endswith("\n") else key + "\n").encode())
        os.close(fd)
        command = [
            "ssh",
            "-i",
            key_file,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "LogLevel=ERROR",
        ]
        if port is not None:
            command += ["-p", str(port)]
        try:
            result = subprocess.run(
                [*command, target, "true"],
                capture_output=True,
                text=True,
                timeout=SSH_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise ConfigError("The 'ssh' client is not installed") from None
        except subprocess.TimeoutExpired:
            raise UnreachableError(f"SSH login to {target} timed out after {SSH_TIMEOUT:.0f} s") from None
    finally:
        Path(key_file).unlink(missing_ok=True)
    if result.returncode == 0:
        return
    stderr = " | ".join(line.strip() for line in result.stderr.strip().splitlines()[-3:]) or "no error output"
    reason = f"SSH login to {target} failed: {stderr}"
    details = {"host": credentials.host, "login": credentials.login, "exit_code": result.returncode}
    if "Permission denied" in stderr:
        raise AuthenticationError(reason, details)
    if re.search(r"refused|timed out|resolve|No route|unreachable", stderr, re.IGNORECASE):
        raise UnreachableError(reason, details)
    raise SaaSError(reason, details)


def _private_temp_file(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=".ssh-key-", dir=directory)  # mode 0600


def check_github_access(url: str, credentials: GithubCredentials) -> int:
    """An authenticated git smart-HTTP request to the repository; returns the HTTP status on success."""
    import httpx

    host = urlsplit(url).hostname or url
    try:
        response = httpx.get(
            f"{url}/info/refs",
            params={"service": "git-upload-pack"},
            auth=(credentials.login, credentials.token()),
            timeout=HTTP_TIMEOUT,
            follow_redirects=True,
        )
    except httpx.HTTPError as e:
        raise UnreachableError(f"Could not reach host '{host}': {type(e).__name__}: {e}", {"url": url}) from None
    details = {"url": url, "status": response.status_code}
    if response.status_code in (401, 403):
        raise AuthenticationError(f"{host} rejected the credentials for {url} (HTTP {response.status_code})", details)
    if response.status_code == 404:
        raise NotFoundError(f"Repository {url} was not found, or the token may not read it", details)
    if response.status_code >= 500:
        raise RemoteError(
            f"{host} failed to answer for {url} (HTTP {response.status_code})", details, status=response.status_code
        )
    if response.status_code == 200 and not response.headers.get("content-type", "").startswith(
        "application/x-git-upload-pack-advertisement"
    ):
        raise SaaSError(f"{host} answered for {url} but not as a git server (redirected to a web page?)", details)
    if response.status_code != 200:
        raise SaaSError(f"Unexpected answer from {host} for {url} (HTTP {response.status_code})", details)
    return response.status_code


# -- commands --------------------------------------------------------------------------------------


def add_ssh(ctx: Context, args: argparse.Namespace) -> None:
    from saas.core.schemas import SSHCredentials

    keystore = ctx.load_keystore()
    p = ctx.prompt
    name = args.name or p.text("Enter name of the SSH profile:", name="name", flag="--name", validate=_valid_name)
    _checked(name, _valid_name, "name")
    host = args.host or p.text(
        "Enter host (host or host:port):",
        name="host",
        flag="--host",
        validate=lambda v: bool(v.strip()) or "Enter a host",
    )
    login = args.login or p.text(
        "Enter login:", name="login", flag="--login", validate=lambda v: bool(v.strip()) or "Enter a login"
    )
    key_file = args.key_file or p.text(
        "Enter path to the private key file:",
        name="key file",
        flag="--key-file",
        validate=lambda v: bool(v.strip()) or "Enter a path",
    )
    _checked(host, _not_blank, "host")
    _checked(login, _not_blank, "login")
    path = Path(key_file).expanduser()
    try:
        key = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"Cannot read key file '{path}': {getattr(e, 'strerror', None) or e}") from None
    if "PRIVATE KEY" not in key:
        raise InvalidInputError(f"'{path}' does not look like a private key file")
    replaced = keystore.ssh_credentials.get(name) is not None
    keystore.ssh_credentials.update(
        name, SSHCredentials(host=host.strip(), login=login.strip(), key=key, key_path=str(path.resolve()))
    )
    ctx.out.result(
        {"type": "ssh", "name": name, "host": host, "login": login, "replaced": replaced},
        f"SSH credentials '{name}' {'updated' if replaced else 'added'} ({login}@{host}).",
    )


def add_github(ctx: Context, args: argparse.Namespace) -> None:
    from saas.core.schemas import GithubCredentials

    keystore = ctx.load_keystore()
    p = ctx.prompt
    url = args.url or p.text("Enter URL of the repository:", name="url", flag="--url", validate=_valid_url)
    url = normalise_repository_url(_checked(url, _valid_url, "url"))
    login = args.login or p.text(
        "Enter login:", name="login", flag="--login", validate=lambda v: bool(v.strip()) or "Enter a login"
    )
    token = args.personal_access_token or p.password(
        "Enter personal access token:", name="personal access token", flag="--personal-access-token"
    )
    _checked(login, _not_blank, "login")
    if not token:
        raise InvalidInputError("The personal access token must not be empty")
    replaced = keystore.github_credentials.get(url) is not None
    keystore.github_credentials.update(url, GithubCredentials(login=login.strip(), personal_access_token=token))
    ctx.out.result(
        {"type": "github", "url": url, "login": login, "replaced": replaced},
        f"GitHub credentials for {url} {'updated' if replaced else 'added'} (login {login}).",
    )


def _rows(keystore: Keystore) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in keystore.ssh_credentials.list():
        ssh = keystore.ssh_credentials.get(name)
        assert ssh is not None
        rows.append({"type": "ssh", "name": name, "login": ssh.login, "host": ssh.host, "key_path": ssh.key_path})
    for url in keystore.github_credentials.list():
        github = keystore.github_credentials.get(url)
        assert github is not None
        rows.append(
            {
                "type": "github",
                "name": url,
                "login": github.login,
                "host": urlsplit(url).hostname,
                "key_path": None,
            }
        )
    return rows


def list_(ctx: Context, args: argparse.Namespace) -> None:
    rows = _rows(ctx.load_keystore())
    ctx.out.result(rows)
    if ctx.out.as_json:
        return
    ctx.out.line(f"Found {len(rows)} credentials:")
    if rows:
        ctx.out.table(
            ["TYPE", "NAME/URL", "LOGIN", "HOST"],
            [[r["type"], r["name"], r["login"], r["host"]] for r in rows],
        )


def remove(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    rows = _rows(keystore)
    names = list(args.names)
    if not names:
        if not rows:
            ctx.out.result({"removed": []}, "No credentials to remove.")
            return
        names = ctx.prompt.checkbox(
            "Select the credentials to remove:",
            [(f"{r['type']}: {r['name']} ({r['login']})", r["name"]) for r in rows],
            name="credential names",
            flag="NAMES (positional)",
        )
    known = {r["name"]: r["type"] for r in rows}
    unknown = [n for n in names if normalise_repository_url(n) not in known and n not in known]
    if unknown:
        raise NotFoundError(
            f"No credentials named {', '.join(repr(n) for n in unknown)}; nothing removed",
            {"unknown": unknown},
        )
    removed = []
    for name in names:
        key = name if name in known else normalise_repository_url(name)
        store = keystore.ssh_credentials if known[key] == "ssh" else keystore.github_credentials
        if store.remove(key):
            removed.append(key)
    ctx.out.result(
        {"removed": removed}, "\n".join(f"Removed credentials '{n}'." for n in removed) or "Nothing removed."
    )


def _pick(ctx: Context, given: str | None, available: list[str], what: str, flag: str) -> str:
    if given:
        return given
    if not available:
        raise NotFoundError(f"The keystore has no {what} credentials")
    if len(available) == 1:
        return available[0]
    return ctx.prompt.select(f"Select the {what} credentials:", [(n, n) for n in available], name=what, flag=flag)


def test_ssh(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    name = _pick(ctx, args.name, keystore.ssh_credentials.list(), "SSH", "--name")
    credentials = keystore.ssh_credentials.get(name)
    if credentials is None:
        raise NotFoundError(f"No SSH credentials named '{name}'")
    check_ssh_login(credentials, ctx.temp_directory())
    target = f"{credentials.login}@{credentials.host}"
    ctx.out.result({"type": "ssh", "name": name, "ok": True}, f"SSH login to {target} with '{name}' works.")


def test_github(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    url = _pick(
        ctx,
        args.url and normalise_repository_url(args.url),
        keystore.github_credentials.list(),
        "GitHub",
        "--url",
    )
    credentials = keystore.github_credentials.get(url)
    if credentials is None:
        raise NotFoundError(f"No GitHub credentials for '{url}'")
    if url.startswith("http://"):
        ctx.out.warning(f"{url} is plain HTTP: the token travels unencrypted.")
    status = check_github_access(url, credentials)
    ctx.out.result(
        {"type": "github", "url": url, "ok": True, "status": status},
        f"Authenticated access to {url} works (login {credentials.login}).",
    )


def register(identity_commands: argparse._SubParsersAction) -> None:
    group = identity_commands.add_parser("credentials", help="SSH and GitHub credentials in the keystore")
    group.set_defaults(handler=None, _parser=group)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    add = sub.add_parser("add", help="add credentials")
    add.set_defaults(handler=None, _parser=add)
    add_sub = add.add_subparsers(title="kinds", metavar="KIND")
    p = add_sub.add_parser("ssh", help="add an SSH profile (host, login, private key)")
    p.add_argument("--name", help="name of the SSH profile")
    p.add_argument("--host", help="remote host, optionally host:port")
    p.add_argument("--login", help="login on the remote host")
    p.add_argument("--key-file", help="path to the private key file (its content is stored in the keystore)")
    p.set_defaults(handler=add_ssh)
    p = add_sub.add_parser("github", help="add GitHub credentials for a repository")
    p.add_argument("--url", help="repository URL, e.g. https://github.com/owner/repo")
    p.add_argument("--login", help="GitHub login")
    p.add_argument("--personal-access-token", help="personal access token")
    p.set_defaults(handler=add_github)

    p = sub.add_parser("list", help="list credentials (never shows secrets)")
    p.set_defaults(handler=list_)

    p = sub.add_parser("remove", help="remove credentials by SSH name or repository URL")
    p.add_argument("names", nargs="*", metavar="NAMES", help="SSH profile names and/or repository URLs")
    p.set_defaults(handler=remove)

    test = sub.add_parser("test", help="check that credentials work")
    test.set_defaults(handler=None, _parser=test)
    test_sub = test.add_subparsers(title="kinds", metavar="KIND")
    p = test_sub.add_parser("ssh", help="log in with ssh")
    p.add_argument("--name", help="name of the SSH profile")
    p.set_defaults(handler=test_ssh)
    p = test_sub.add_parser("github", help="make an authenticated request to the repository")
    p.add_argument("--url", help="repository URL")
    p.set_defaults(handler=test_github)
