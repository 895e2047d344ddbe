"""Terminal safety (issue 14, item 10): strings that came from the network (another user's tag values, job messages,
adapter logs, server errors) reach a person's terminal without escape sequences or control characters, and exactly
under --json. The attack: a tag value and a job message holding an OSC (retitle the terminal), a CSI (clear the
screen) and an 8-bit CSI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.dor.schemas import DataObject
from saas.rti.proxy import RTIProxy
from saas_cli.output import Output, clean, format_table
from tests.rti.rti_support import adapter_repo

EVIL = "A\x1b]0;pwned\x07\x1b[2JB\x9b"
BAD = ("\x1b", "\x07", "\x9b", "pwned")
EXECUTE = """#!/bin/bash
printf 'trigger:message:warning:{message}\\n'
exec python3 processor.py "$2"
"""


def assert_clean(text: str) -> None:
    for bad in BAD:
        assert bad not in text, (bad, text)


def test_clean_removes_sequences_and_controls() -> None:
    assert clean(EVIL) == "AB"
    assert clean("x\x9b31mred\x1b[0m\x00\x7f\x85\r") == "xred"
    assert clean("a\tb\nc") == "a\tb\nc"
    assert clean("a\tb\nc", multiline=False) == "a b c"
    assert clean("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\") == "link"  # hyperlinks too
    assert clean("grüße 日本 ✓") == "grüße 日本 ✓"  # printable text stays as it is
    assert format_table(["K"], [[EVIL]]).splitlines()[-1] == "AB"


def test_output_cleans_human_text_and_keeps_json_exact(capsys: pytest.CaptureFixture[str]) -> None:
    human = Output(as_json=False)
    human.line(f"line {EVIL}")
    human.result({"v": EVIL}, f"result {EVIL}")
    human.table(["TAG"], [[EVIL]])
    human.stream(f"log {EVIL}")
    human.warning(f"warning {EVIL}")
    human.error(f"reason {EVIL}\nsecond line", {"reason": EVIL})
    out, err = capsys.readouterr()
    assert_clean(out + err)
    assert "line AB" in out and "result AB" in out and "log AB" in out
    assert "Warning: warning AB" in err and "Error: reason AB second line" in err

    machine = Output(as_json=True)
    machine.result({"v": EVIL})
    machine.stream(EVIL)
    machine.error(f"reason {EVIL}", {"reason": EVIL, "id": "x", "details": {}})
    out, err = capsys.readouterr()
    assert json.loads(out[: out.index("}") + 1]) == {"v": EVIL}
    assert EVIL in out  # the streamed line, exactly
    assert json.loads(out[out.index('{\n  "error"') :])["error"]["reason"] == EVIL
    assert_clean(err)


@pytest.fixture
def owner_and_user(cli, shared_keystore, node_factory, publish) -> tuple[Any, Keystore]:
    node = node_factory("cli-terminal-node")
    publish("{}:{}".format(*node.address), shared_keystore)
    return node, Keystore.load(shared_keystore.path, shared_keystore.password)


def test_tag_value_from_another_user(cli, owner_and_user, tmp_path: Path) -> None:
    node, user = owner_and_user
    address = "{}:{}".format(*node.address)
    content = tmp_path / "x.json"
    content.write_text("{}")
    with DORProxy(node.address, user) as dor:
        obj = dor.add_data_object(content, user.identity, False, False, "EvilTagged", "json")
        dor.update_tags(obj.obj_id, user, [DataObject.Tag(key="note", value=EVIL)])

    human = cli("dor", "--address", address, "search", "--data-type", "EvilTagged")
    assert human.returncode == 0, human.stderr
    assert obj.obj_id in human.stdout and "note=AB" in human.stdout
    assert_clean(human.stdout + human.stderr)
    meta = cli("dor", "--address", address, "meta", obj.obj_id)
    assert meta.returncode == 0 and "\\u001b" in meta.stdout  # JSON text: the characters escaped, not sent
    assert_clean(meta.stdout.replace("pwned", ""))

    machine = cli("--json", "dor", "--address", address, "search", "--data-type", "EvilTagged")
    assert json.loads(machine.stdout)[0]["tags"] == {"note": EVIL}
    assert json.loads(cli("--json", "dor", "--address", address, "meta", obj.obj_id).stdout)["tags"] == {"note": EVIL}


def test_job_message_and_log_from_an_adapter(cli, shared_keystore, owner_and_user, tmp_path: Path) -> None:
    node, user = owner_and_user
    address = "{}:{}".format(*node.address)
    message = EVIL.replace("\x1b", "\\x1b").replace("\x07", "\\x07").replace("\x9b", "\\xc2\\x9b")
    repo, commit = adapter_repo(
        tmp_path / "repo",
        "abc",
        extra={"abc/execute.sh": EXECUTE.format(message=message)},
    )
    owner = node.keystore
    with DORProxy(node.address, owner) as dor:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "abc", "default", owner.identity).obj_id
    with RTIProxy(node.address, owner) as rti:
        rti.deploy(proc_id, owner)
        assert rti.wait_deployed(proc_id, timeout=60, authority=owner).state == "ready"
    with RTIProxy(node.address, user) as rti:
        job = rti.submit_job(
            proc_id,
            [{"name": "a", "type": "value", "value": {"v": 1}}, {"name": "b", "type": "value", "value": {"v": 2}}],
            [{"name": "c", "owner_iid": user.iid, "restricted_access": False, "content_encrypted": False}],
            user,
        )
        status = rti.wait_for_job(job.id, user, timeout=60)
    assert status.state == "successful", status
    assert [m["message"] for m in status.messages if m.get("severity") == "warning"] == [EVIL]

    as_user = [*shared_keystore.args(), "rti", "--address", address]
    human = cli(*as_user, "job", "status", job.id)
    assert human.returncode == 0, human.stderr
    assert_clean(human.stdout.replace("pwned", "") + human.stderr)  # in the Status JSON: escaped
    follow = cli(*as_user, "job", "logs", "--follow", job.id)
    assert follow.returncode == 0, follow.stderr
    assert "trigger:message:warning:AB" in follow.stdout
    assert_clean(follow.stdout + follow.stderr)

    machine = json.loads(
        cli(*shared_keystore.args(), "--json", "rti", "--address", address, "job", "status", job.id).stdout
    )
    assert EVIL in [m["message"] for m in machine["messages"]]
    exact = cli(*shared_keystore.args(), "--json", "rti", "--address", address, "job", "logs", "--follow", job.id)
    assert f"trigger:message:warning:{EVIL}" in exact.stdout
