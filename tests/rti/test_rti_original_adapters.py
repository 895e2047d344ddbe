"""Adapters written for the original middleware: install.sh and execute.sh with CRLF line endings run (the node
strips the carriage returns in its clone), and each by-reference input gets `<name>.meta` (its metadata JSON) in
the working folder."""

from __future__ import annotations

from pathlib import Path

from rti_support import RTIEnv, adapter_repo, git

from saas.rti.deploy import strip_carriage_returns

INSTALL = '#!/bin/bash\nset -e\nif [ "$1" == "default" ]; then\n    echo installed\nfi\n'
EXECUTE = """#!/bin/bash
set -eu
test ! -e "$2/b.meta"
python3 - "$2" <<'PY'
import json, os, sys
wd = sys.argv[1]
meta = json.load(open(os.path.join(wd, "a.meta")))
a = json.load(open(os.path.join(wd, "a")))["v"]
b = json.load(open(os.path.join(wd, "b")))["v"]
json.dump({"v": a + b, "meta": meta}, open(os.path.join(wd, "c"), "w"))
print("trigger:output:c", flush=True)
PY
"""


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def test_crlf_scripts_run_and_inputs_come_with_their_meta(rti_env_factory, tmp_path: Path) -> None:
    env: RTIEnv = rti_env_factory()
    repo, _ = adapter_repo(tmp_path / "crlf-repo", copies={"crlf": "abc"})
    for name, text in (("install.sh", INSTALL), ("execute.sh", EXECUTE)):
        (repo / "crlf" / name).write_bytes(_crlf(text).encode())
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "crlf scripts")
    commit = git(repo, "rev-parse", "HEAD")

    proc_id = env.deploy("crlf", repo=repo, commit=commit)
    status = env.wait(env.submit_abc(proc_id, a=2, b=3))

    assert status.state == "successful", status.errors
    value = env.output_value(status.output["c"].obj_id)
    assert value["v"] == 5
    a_id = next(i.obj_id for i in status.job.task.input if i.name == "a")
    with env.dor(env.alice) as dor:
        meta = dor.get_meta(a_id)
    assert meta is not None and value["meta"]["obj_id"] == a_id
    assert (value["meta"]["data_type"], value["meta"]["data_format"]) == ("JSONObject", "json")
    assert value["meta"]["c_hash"] == meta.c_hash


def test_strip_carriage_returns_changes_only_the_scripts(tmp_path: Path) -> None:
    (tmp_path / "install.sh").write_bytes(b"echo a\r\necho b\r\n")
    (tmp_path / "execute.sh").write_bytes(b"echo c\n")
    (tmp_path / "data.csv").write_bytes(b"x,y\r\n")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.sh"
    outside.write_bytes(b"echo d\r\n")
    assert strip_carriage_returns(tmp_path) == ["install.sh"]
    assert (tmp_path / "install.sh").read_bytes() == b"echo a\necho b\n"
    assert (tmp_path / "data.csv").read_bytes() == b"x,y\r\n"
    (tmp_path / "execute.sh").unlink()
    (tmp_path / "execute.sh").symlink_to(outside)
    assert strip_carriage_returns(tmp_path) == []
    assert outside.read_bytes() == b"echo d\r\n"  # a link out of the clone is never followed
