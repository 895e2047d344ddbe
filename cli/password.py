"""Where the keystore password comes from, and how a node keeps it out of reach (DESIGN §12).

Sources, first given wins: `--password` (warned about: any local user can read a command line), `--password-file`,
the hidden `--password-fd` (how `service` hands the password to itself), `$SAAS_PASSWORD`, else a prompt.
`$SAAS_PASSWORD` is removed from `os.environ` as soon as it is read, so processes the CLI starts never see it.

A process's initial command line and environment stay readable in /proc/<pid>/cmdline and /proc/<pid>/environ
whatever `os.environ` says later. A node lives long, so `service` given its password there starts itself again
(`reexec_without_password`): same interpreter and arguments without the password options, `SAAS_PASSWORD` left
out of the environment, and the password in a pipe whose read end the new program inherits.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from saas.core.errors import ConfigError, InvalidInputError

__all__ = ["ENV_VAR", "GivenPassword", "PasswordSource", "add_password_options", "reexec_without_password"]

ENV_VAR = "SAAS_PASSWORD"
PASSWORD_OPTIONS = ("--password", "--password-file", "--password-fd")
# The whole password is written to the pipe before the program starts again, so it must fit the pipe's buffer
# (at least one page on Linux, even for a user over the pipe-buffer limits).
MAX_PIPED_BYTES = 4096
ARGUMENT_WARNING = (
    "--password puts the password on the command line, where other local users can read it (e.g. with ps); "
    "use --password-file or $SAAS_PASSWORD"
)


class PasswordSource(enum.Enum):
    """Where the password was given."""

    ARGUMENT = "--password"
    FILE = "--password-file"
    DESCRIPTOR = "--password-fd"
    ENVIRONMENT = "$SAAS_PASSWORD"
    NONE = "none"  # asked for when needed


@dataclass(frozen=True)
class GivenPassword:
    """The password from the command line or environment (`value` None: not given) and whether this process's
    initial command line or environment holds a password (`exposed`), which `service` does not keep."""

    value: str | None
    source: PasswordSource
    exposed: bool

    @classmethod
    def take(cls, args: argparse.Namespace) -> GivenPassword:
        """Resolve the password options; `$SAAS_PASSWORD` is removed from the environment whatever is used."""
        from_env = os.environ.pop(ENV_VAR, None) or None
        exposed = args.password is not None or from_env is not None
        if args.password is not None:
            return cls(args.password, PasswordSource.ARGUMENT, exposed)
        if args.password_file is not None:
            return cls(read_password_file(Path(args.password_file).expanduser()), PasswordSource.FILE, exposed)
        if args.password_fd is not None:
            return cls(read_password_fd(args.password_fd), PasswordSource.DESCRIPTOR, exposed)
        if from_env is not None:
            return cls(from_env, PasswordSource.ENVIRONMENT, exposed)
        return cls(None, PasswordSource.NONE, exposed)


def add_password_options(parser: argparse.ArgumentParser) -> None:
    """The global password options (at most one of them)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password",
        help="keystore password, visible to other local users in the process list: prefer --password-file or "
        "$SAAS_PASSWORD (asked for if none is given)",
    )
    group.add_argument(
        "--password-file",
        metavar="PATH",
        help="read the keystore password from the first line of PATH (keep it mode 0600)",
    )
    group.add_argument("--password-fd", type=int, help=argparse.SUPPRESS)  # `service` to itself


def read_password_file(path: Path) -> str:
    """The first line of `path`, without its line ending."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InvalidInputError(f"Cannot read the password file '{path}': {reason}", {"path": str(path)}) from None
    return _first_line(line, f"The password file '{path}'")


def read_password_fd(fd: int) -> str:
    """The first line of what can be read from file descriptor `fd` (which is closed)."""
    try:
        with open(fd, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InvalidInputError(f"Cannot read the password from file descriptor {fd}: {e.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise InvalidInputError(f"The password from file descriptor {fd} is not UTF-8 text") from None
    return _first_line(text.split("\n", 1)[0], f"The password from file descriptor {fd}")


def _first_line(line: str, what: str) -> str:
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise InvalidInputError(f"{what} is empty")
    return password


def without_password_options(arguments: Sequence[str]) -> list[str]:
    """`arguments` without the password options and their values (`--password X` or `--password=X`)."""
    kept: list[str] = []
    skip_value = False
    for argument in arguments:
        if skip_value:
            skip_value = False
        elif argument in PASSWORD_OPTIONS:
            skip_value = True
        elif not argument.startswith(tuple(f"{option}=" for option in PASSWORD_OPTIONS)):
            kept.append(argument)
    return kept


def reexec_without_password(password: str, arguments: Sequence[str]) -> NoReturn:
    """Start this program again in this process with the password in an inherited pipe (see the module doc).

    `arguments` are the ones the CLI parsed (`sys.argv[1:]`); the interpreter's own options and script or module
    come from `sys.orig_argv`, so `saas-cli ...` and `python -m saas_cli.main ...` both run again as they were."""
    data = password.encode() + b"\n"
    if len(data) > MAX_PIPED_BYTES:
        raise InvalidInputError(f"The password is longer than {MAX_PIPED_BYTES - 1} bytes")
    program = list(sys.orig_argv[: len(sys.orig_argv) - len(arguments)])
    if len(program) < 2 or list(sys.orig_argv[len(program) :]) != list(arguments):
        program = [sys.executable, sys.argv[0]]
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)
    finally:
        os.close(write_end)
    os.set_inheritable(read_end, True)
    environment = {key: value for key, value in os.environ.items() if key != ENV_VAR}
    command = [*program, "--password-fd", str(read_end), *without_password_options(arguments)]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, command, environment)
    except OSError as e:
        os.close(read_end)
        raise ConfigError(f"Cannot start the node again without the password in its arguments: {e}") from None
