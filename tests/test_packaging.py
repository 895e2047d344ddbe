"""The distribution's shape: packages listed in pyproject.toml, light imports, the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("fastapi", "uvicorn", "libp2p", "starlette", "trio")


def _python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests", timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "saas").rglob("__init__.py")}
    found |= {
        "saas_cli." + ".".join(p.parent.relative_to(ROOT / "cli").parts) if p.parent != ROOT / "cli" else "saas_cli"
        for p in (ROOT / "cli").rglob("__init__.py")
    }
    assert listed == found
    assert config["package-dir"] == {"saas_cli": "cli"}


def test_core_and_cli_do_not_import_server_dependencies() -> None:
    code = (
        "import sys\n"
        "import saas.core.keystore, saas.core.identity, saas.core.signing, saas.core.schemas\n"
        "from saas_cli.main import main\n"
        "sys.argv = ['saas-cli', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    assert _python(code).splitlines()[-1] == "[]"


def test_cli_help_imports_neither_crypto_nor_pydantic_nor_questionary() -> None:
    # `saas-cli --help` must stay fast: its import path is argparse plus our own light modules.
    code = (
        "import sys\n"
        "from saas_cli.main import main\n"
        "sys.argv = ['saas-cli', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'cryptography', 'pydantic', 'questionary', "
        "'httpx', 'prompt_toolkit'}))\n"
    )
    assert _python(code).splitlines()[-1] == "[]"


def test_console_script_is_installed_and_runs() -> None:
    script = Path(sys.executable).parent / "saas-cli"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "identity" in result.stdout
