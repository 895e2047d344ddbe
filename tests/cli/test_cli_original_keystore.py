"""The original middleware's keystores in the CLI: `identity import` prints the old and new IDs, and a command
that names or picks an original keystore converts it on first use (the real file written by the original code and
one built from the documented format)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.cli_support import write_password_file
from tests.original_keystore_support import ORIGINAL_FIXTURE_PASSWORD, original_fixture, write_original_keystore


def test_identity_import_prints_old_and_new_ids(cli, tmp_path: Path) -> None:
    password_file = write_password_file(tmp_path / "pw", ORIGINAL_FIXTURE_PASSWORD)
    folder = tmp_path / "keystores"
    old_id = original_fixture().stem

    result = cli("--keystore", folder, "--password-file", password_file, "identity", "import", original_fixture())

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Old ID: {old_id}"
    new_id = lines[1].removeprefix("New ID: ")
    assert len(new_id) == 64 and new_id != old_id
    assert (folder / f"{new_id}.json").is_file()
    listed = json.loads(cli("--keystore", folder, "--json", "identity", "list").stdout)
    assert [(i["id"], i["name"]) for i in listed] == [(new_id, "legacy user")]
    creds = cli(
        *("--keystore", folder, "--keystore-id", new_id, "--password-file", password_file, "--json"),
        *("identity", "credentials", "list"),
    )
    assert creds.returncode == 0, creds.stderr
    assert "https://github.com/x/y" in creds.stdout


def test_old_id_converts_on_first_use_then_points_to_the_new_one(cli, tmp_path: Path) -> None:
    folder = tmp_path / "keystores"
    folder.mkdir()
    shutil.copy(original_fixture(), folder)
    old_id = original_fixture().stem
    password_file = write_password_file(tmp_path / "pw", ORIGINAL_FIXTURE_PASSWORD)
    listed = cli("--keystore", folder, "identity", "list")
    assert old_id in listed.stderr and "identity import" in listed.stderr and "corrupted" not in listed.stderr

    first = cli(
        "--keystore", folder, "--keystore-id", old_id, "--password-file", password_file, "--json", "identity", "show"
    )

    assert first.returncode == 0, first.stderr
    new_id = json.loads(first.stdout)["id"]
    assert f"converted the original keystore {old_id} to {new_id}" in first.stderr
    second = cli("--keystore", folder, "--keystore-id", old_id, "--json", "identity", "show")  # no password needed
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["id"] == new_id and "its new ID is" in second.stderr
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted([old_id, new_id])


def test_the_only_keystore_in_the_folder_is_converted_when_used(cli, tmp_path: Path) -> None:
    path, _ = write_original_keystore(tmp_path / "keystores", "pw-built", name="built user", email="b@example.org")
    password_file = write_password_file(tmp_path / "pw", "pw-built")

    result = cli("--keystore", path.parent, "--password-file", password_file, "--json", "identity", "show")

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["name"], document["email"]) == ("built user", "b@example.org")
    wrong = write_password_file(tmp_path / "wrong", "nope")
    other, _ = write_original_keystore(tmp_path / "other", "pw-built")
    failed = cli("--keystore", other.parent, "--password-file", wrong, "identity", "show")
    assert failed.returncode != 0 and "Wrong password" in failed.stderr and "Traceback" not in failed.stderr
