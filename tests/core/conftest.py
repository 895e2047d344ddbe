"""Shared fixtures for the `saas.core` tests.

Creating a keystore costs ~0.5 s (RSA-4096 + scrypt) and loading one ~0.3 s (scrypt), so two keystores are
created once per session and never modified; a test that changes a keystore works on a copy of one of their
files (`clone_keystore`), which is a valid, independent keystore of the same identity.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from saas.core.keys import RSAKeyPair
from saas.core.keystore import Keystore

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def password() -> str:
    return PASSWORD


@pytest.fixture(scope="session")
def alice(tmp_path_factory: pytest.TempPathFactory) -> Keystore:
    """A session-wide keystore; tests must not modify it (use `clone_keystore`)."""
    return Keystore.create(tmp_path_factory.mktemp("alice"), "Alice Liddell", "alice@example.org", PASSWORD)


@pytest.fixture(scope="session")
def bob(tmp_path_factory: pytest.TempPathFactory) -> Keystore:
    """A second session-wide keystore (a different identity); tests must not modify it."""
    return Keystore.create(tmp_path_factory.mktemp("bob"), "Bob Builder", "bob@example.org", PASSWORD)


@pytest.fixture(scope="session")
def rsa_pair() -> RSAKeyPair:
    return RSAKeyPair.generate()


@pytest.fixture(scope="session")
def other_rsa_pair() -> RSAKeyPair:
    return RSAKeyPair.generate()


@pytest.fixture
def clone_keystore(tmp_path: Path) -> Callable[..., Path]:
    """Copy a keystore file into a fresh folder under `tmp_path` and return the copy's path."""

    def clone(keystore: Keystore, folder: str = "clone") -> Path:
        directory = tmp_path / folder
        directory.mkdir(exist_ok=True)
        return Path(shutil.copy2(keystore.path, directory / keystore.path.name))

    return clone


PythonRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def run_python() -> PythonRunner:
    """Run `code` in a fresh interpreter (`sys.executable -c code *args`); fail with its stderr if it fails."""

    def run(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"subprocess failed ({result.returncode}):\n{result.stderr}"
        return result

    return run
