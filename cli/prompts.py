"""Every interactive prompt of the CLI. Nothing else in the CLI imports questionary.

A `Prompter` asks only when it is interactive (a TTY and no `--non-interactive`); otherwise each ask raises
`MissingValueError` naming the flag that supplies the value, so scripts never block.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from saas.core.errors import MissingValueError
from saas_cli.output import clean

__all__ = ["Prompter"]

T = TypeVar("T")


def _questionary() -> Any:
    import questionary  # imported on first prompt: it costs ~0.1 s and --help never needs it

    return questionary


class Prompter:
    def __init__(self, interactive: bool):
        self.interactive = interactive

    def _require(self, name: str, flag: str | None) -> None:
        if not self.interactive:
            raise MissingValueError(name, flag)

    def text(
        self,
        message: str,
        *,
        name: str,
        flag: str | None,
        default: str = "",
        validate: Callable[[str], bool | str] | None = None,
    ) -> str:
        self._require(name, flag)
        return _questionary().text(message, default=default, validate=validate).unsafe_ask()

    def password(self, message: str, *, name: str = "password", flag: str | None = "--password") -> str:
        self._require(name, flag)
        return _questionary().password(message).unsafe_ask()

    def new_password(self, *, flag: str | None = "--password") -> str:
        """Asks twice until both entries match and are not empty."""
        self._require("password", flag)
        while True:
            first = self.password("Enter password:", flag=flag)
            if not first:
                print("The password must not be empty.")
                continue
            if self.password("Re-enter password:", flag=flag) == first:
                return first
            print("Passwords do not match, try again.")

    def confirm(self, message: str, *, name: str, flag: str | None, default: bool = False) -> bool:
        self._require(name, flag)
        return bool(_questionary().confirm(message, default=default).unsafe_ask())

    def select(self, message: str, choices: Sequence[tuple[str, T]], *, name: str, flag: str | None) -> T:
        self._require(name, flag)
        q = _questionary()
        options = [q.Choice(title=clean(title, False), value=index) for index, (title, _) in enumerate(choices)]
        return choices[q.select(message, choices=options).unsafe_ask()][1]

    def checkbox(self, message: str, choices: Sequence[tuple[str, T]], *, name: str, flag: str | None) -> list[T]:
        self._require(name, flag)
        q = _questionary()
        options = [q.Choice(title=clean(title, False), value=index) for index, (title, _) in enumerate(choices)]
        return [choices[i][1] for i in q.checkbox(message, choices=options).unsafe_ask()]
