"""What every command gets: the global options, the prompter, the output, and keystore selection."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from saas.core.errors import InvalidInputError, KeystoreCorruptedError, KeystoreNotFoundError
from saas_cli.output import Output
from saas_cli.password import ARGUMENT_WARNING, GivenPassword, PasswordSource
from saas_cli.prompts import Prompter

if TYPE_CHECKING:
    from saas.core.identity import Identity
    from saas.core.keystore import Keystore
    from saas_cli.unlock import Unlocking

__all__ = ["DEFAULT_ADDRESS", "Context", "skip_unused_imports", "spread_group_option"]

DEFAULT_ADDRESS = "127.0.0.1:5001"
PASSWORD_TRIES = 3


@dataclass
class Context:
    """What a command handler gets. `password_exposed`: this process's initial command line or environment holds a
    password; `command_line`: the arguments the CLI parsed when they are this process's own (None when `main` was
    called with arguments, e.g. in-process)."""

    keystore_dir: Path
    keystore_id: str | None
    password: str | None
    temp_dir: Path | None
    prompt: Prompter
    out: Output
    password_exposed: bool = False
    command_line: list[str] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace, out: Output, command_line: list[str] | None = None) -> Context:
        """The context of one command; reads the password options (raises InvalidInputError if unreadable)."""
        interactive = not args.non_interactive and sys.stdin.isatty()
        given = GivenPassword.take(args)
        if given.source is PasswordSource.ARGUMENT:
            out.warning(ARGUMENT_WARNING)
        return cls(
            keystore_dir=Path(args.keystore).expanduser(),
            keystore_id=args.keystore_id,
            password=given.value,
            temp_dir=Path(args.temp_dir).expanduser() if args.temp_dir else None,
            prompt=Prompter(interactive),
            out=out,
            password_exposed=given.exposed,
            command_line=command_line,
        )

    def select_keystore(self) -> tuple[Path, Identity]:
        """The keystore named by --keystore-id, the only one there is, or the one the user picks."""
        from saas.core.identity import is_identity_id
        from saas.core.keystore import list_keystores
        from saas_cli import original_keystores

        if self.keystore_id and not is_identity_id(self.keystore_id):
            raise InvalidInputError(f"'{self.keystore_id}' is not an identity ID (64 characters 0-9a-z)")
        original = original_keystores.select(self)  # the original middleware's keystores are converted on use
        if original is not None:
            return original
        if self.keystore_id:
            if not is_identity_id(self.keystore_id):
                raise InvalidInputError(f"'{self.keystore_id}' is not an identity ID (64 characters 0-9a-z)")
            for path, identity in list_keystores(self.keystore_dir):
                if identity.id == self.keystore_id:
                    return path, identity
            path = self.keystore_dir / f"{self.keystore_id}.json"
            if path.exists():  # list_keystores leaves out files whose identity record does not verify
                raise KeystoreCorruptedError(f"Keystore '{path}' is malformed or was modified", {"path": str(path)})
            raise KeystoreNotFoundError(f"No keystore '{self.keystore_id}' in '{self.keystore_dir}'")
        found = list_keystores(self.keystore_dir)
        if not found:
            raise KeystoreNotFoundError(
                f"No keystores found in '{self.keystore_dir}': create one with 'saas-cli identity create'"
            )
        if len(found) == 1:
            return found[0]
        return self.prompt.select(
            "Select the keystore:",
            [(identity.label(), (path, identity)) for path, identity in found],
            name="keystore",
            flag="--keystore-id",
        )

    def ask_password(self) -> str:
        if self.password is not None:
            return self.password
        self.password = self.prompt.password("Enter password:")
        return self.password

    def load_keystore(self) -> Keystore:
        path, _ = self.select_keystore()
        return self.open_keystore(path)

    def unlock_keystore(self) -> Unlocking:
        """The keystore `load_keystore` would open, opened while the command goes on when its password was given:
        its file key is derived in a thread (scrypt, ~0.4 s, releases the GIL) that starts before the SDK is
        imported when the file is clear from the flags alone (`--keystore-id`, or the folder's only keystore); the
        command imports, connects and hashes meanwhile. Its identity is there at once, its keys when used. A
        password typed at the prompt is checked here, as `open_keystore` does (a wrong one is asked again)."""
        from saas.core.background import Background
        from saas_cli.unlock import Deriving, Unlocking

        password = self.password
        early = self.guess_keystore_file() if password is not None else None
        deriving = Deriving(early, password) if early is not None and password is not None else None
        # Imported here, not in a thread: a thread then only reads the file and derives the key, and never
        # imports a module at the same time as this thread.
        from saas.core.keystore import Keystore
        from saas.core.original_keystore import is_original_keystore  # noqa: F401 -- what Keystore.load imports

        path, identity = self.select_keystore()
        if password is None:
            return Unlocking.opened(self.open_keystore(path))
        if deriving is not None and deriving.path == path:
            return Unlocking(path, identity, lambda: Keystore.open(path, deriving.result()))
        loading = Background(
            lambda: Keystore.load(path, password), "saas-unlock"
        )  # e.g. a keystore picked at the prompt
        return Unlocking(path, identity, loading.result)

    def guess_keystore_file(self) -> Path | None:
        """The file `select_keystore` will pick when that is clear without reading any (the one --keystore-id names,
        or the folder's only `*.json`), else None. Only a guess: `unlock_keystore` checks it against the pick."""
        if self.keystore_id:
            path = self.keystore_dir / f"{self.keystore_id}.json"
            return path if path.is_file() else None
        try:
            found = [p for p in self.keystore_dir.glob("*.json") if p.is_file()]
        except OSError:
            return None
        return found[0] if len(found) == 1 else None

    def open_keystore(self, path: Path) -> Keystore:
        """The keystore at `path`, opened with the given password, or one asked for: a wrong password typed at the
        prompt is asked again (up to PASSWORD_TRIES times); a given one fails at once."""
        from saas.core.errors import WrongPasswordError
        from saas.core.keystore import Keystore

        if self.password is not None:
            return Keystore.load(path, self.password)
        for attempt in range(1, PASSWORD_TRIES + 1):
            password = self.prompt.password("Enter password:")
            try:
                keystore = Keystore.load(path, password)
            except WrongPasswordError:
                if attempt == PASSWORD_TRIES:
                    raise
                self.out.line("Wrong password, try again.")
                continue
            self.password = password
            return keystore
        raise AssertionError("unreachable")

    def node_address(self, given: str | None) -> tuple[str, int]:
        """The REST address of the node to talk to: the flag, else $SAAS_ADDRESS, else 127.0.0.1:5001."""
        from saas.core.helpers import parse_address

        return parse_address(given or env_default("SAAS_ADDRESS", DEFAULT_ADDRESS) or DEFAULT_ADDRESS)

    def temp_directory(self) -> Path:
        import tempfile

        directory = self.temp_dir or Path(tempfile.gettempdir())
        directory.mkdir(parents=True, exist_ok=True)
        return directory


def skip_unused_imports() -> None:
    """For a command that only talks to a node with the SDK's sync proxies (e.g. `dor add`): httpx imports its own
    command-line tool (click, rich, pygments) and httpcore imports trio, if installed, for async use under trio.
    Neither is used by such a command, and together they take ~0.1 s of CPU at every start (issue 21); both
    libraries expect them to be missing. Never for a command that runs a node (its P2P layer runs on trio)."""
    for name in ("httpx._main", "trio"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not installed" to the import system


def env_default(name: str, fallback: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else fallback


def spread_group_option(group: argparse.ArgumentParser, flag: str, dest: str) -> None:
    """Let a group option (e.g. `dor --address`) also be given after the sub-command, as the original CLI allowed:
    every parser under `group` accepts it too. Default SUPPRESS, so an absent flag there does not overwrite the
    value given before the sub-command; hidden from those parsers' help (the group's help names it)."""
    seen: set[int] = set()

    def visit(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for sub in action.choices.values():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                if flag not in sub._option_string_actions:
                    sub.add_argument(flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
                visit(sub)

    visit(group)
