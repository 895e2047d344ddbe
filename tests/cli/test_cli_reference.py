"""README.md lists every CLI command and flag, generated from the argparse definitions: this fails when it is stale."""

from __future__ import annotations

from pathlib import Path

from saas_cli.main import build_parser
from saas_cli.reference import END, START, render

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands(parser, prefix: str = "saas-cli") -> list[str]:
    import argparse

    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, f"{prefix} {name}")
    return found


def test_readme_cli_reference_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, "README.md lost its cli-reference markers"
    current = text[text.index(START) + len(START) : text.index(END)].strip("\n")
    assert current == render().strip("\n"), (
        "README.md's CLI reference is out of date with the CLI's flags: run scripts/cli-reference and commit README.md"
    )


def test_reference_lists_every_command_and_flag() -> None:
    reference = render()
    parser = build_parser()
    for command in _commands(parser):
        assert f"- `{command}" in reference, command
    for flag in (
        "--keystore PATH",
        "--json",
        "--data-type DATA_TYPE",
        "--kind {processor,agent}",
        "--input NAME=FILE|JSON",
    ):
        assert f"`{flag}" in reference, flag
