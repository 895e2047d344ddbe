"""The `saas-cli` entry point: global flags, the command tree, and the one error handler.

Importing this module is cheap (argparse only): command modules import the SDK inside their handlers, so
`saas-cli --help` never loads cryptography, pydantic or any server dependency.

Exit codes (documented in README.md):
  0 success · 1 other error · 2 usage: bad or missing value · 3 authentication (wrong password, rejected
  credentials) · 4 not found · 5 not permitted · 6 remote host unreachable or failed · 7 keystore corrupted or
  modified · 8 not enough storage on the node (storage quota used up, or its disk full) · 9 an audit log failed
  verification · 130 interrupted
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from saas_cli.commands import adapter, audit, dashboard, doctor, dor, identity, network, rti, service
from saas_cli.context import Context, env_default
from saas_cli.output import Output
from saas_cli.password import add_password_options

__all__ = ["EXIT_CODES", "build_parser", "main"]

# (exception class name, exit code); the first class the error is an instance of wins.
EXIT_CODES: list[tuple[str, int]] = [
    ("KeystoreCorruptedError", 7),
    ("AuditTamperedError", 11),
    ("AuthenticationError", 3),
    ("AuthorisationError", 5),
    ("NotFoundError", 4),
    ("InvalidInputError", 2),
    ("ConfigError", 2),
    ("InsufficientStorageError", 8),
    ("LimitReachedError", 9),
    ("ConflictError", 10),
    ("UnavailableError", 6),
    ("UnreachableError", 6),
    ("RemoteError", 6),
    ("SaaSError", 1),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saas-cli",
        description="Simulation-as-a-Service middleware: identities, nodes, data objects and processors.",
        epilog="Values missing from the command line are asked for interactively when a terminal is attached.",
    )
    parser.add_argument(
        "--keystore",
        default=env_default("SAAS_KEYSTORE", "~/.keystore"),
        metavar="PATH",
        help="directory of keystores (default: $SAAS_KEYSTORE or $HOME/.keystore)",
    )
    parser.add_argument(
        "--keystore-id",
        default=env_default("SAAS_KEYSTORE_ID"),
        metavar="IID",
        help="the identity/keystore to use (default: $SAAS_KEYSTORE_ID)",
    )
    add_password_options(parser)
    parser.add_argument("--temp-dir", metavar="PATH", help="directory for temporary files")
    parser.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON results")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also print full records (e.g. the metadata of an added object)"
    )
    parser.add_argument(
        "--non-interactive",
        action="store_true",
        help="never prompt: a missing value is an error naming its flag",
    )
    parser.set_defaults(handler=None, _parser=parser)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    identity.register(commands)
    service.register(commands)
    dor.register(commands)
    network.register(commands)
    rti.register(commands)
    adapter.register(commands)
    dashboard.register(commands)
    doctor.register(commands)
    audit.register(commands)
    return parser


def _exit_code(error: BaseException) -> int:
    names = {cls.__name__ for cls in type(error).__mro__}
    return next((code for name, code in EXIT_CODES if name in names), 1)


def main(argv: Sequence[str] | None = None) -> None:
    # No pydantic plugins in a command: looking for them scans every installed package's entry points (~50 ms of
    # each command's start-up), and the CLI uses none.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:  # a command group without its sub-command
        args._parser.print_help(sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Output(args.json, args.verbose)
    try:
        ctx = Context.from_args(args, out, list(sys.argv[1:]) if argv is None else None)
        args.handler(ctx, args)
    except BrokenPipeError:  # stdout closed early (e.g. `| head`): not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (KeyboardInterrupt, EOFError):  # Ctrl-C, or Ctrl-D at a prompt
        out.error("Interrupted")
        sys.exit(130)
    except Exception as e:
        from saas.core.errors import SaaSError

        if not isinstance(e, SaaSError):
            raise
        out.error(e.reason, e.to_envelope())
        sys.exit(_exit_code(e))


if __name__ == "__main__":  # pragma: no cover
    main()
