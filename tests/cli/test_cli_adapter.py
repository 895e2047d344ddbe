"""`saas-cli adapter init` and `adapter test`: a new adapter from the template runs locally as the RTI would run it,
and each kind of mistake (descriptor, input, forgotten output, failing script) ends with a clear line and a non-zero
exit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

PARAMETERS = '{"factor": 2}'


@pytest.fixture
def adapter(cli, tmp_path: Path) -> Path:
    folder = tmp_path / "my-adapter"
    result = cli("adapter", "init", folder)
    assert result.returncode == 0, result.stderr
    (tmp_path / "table.csv").write_text("value\n1\n2.5\n")
    return folder


def _test(cli, folder: Path, *extra: str, table: Path | None = None) -> subprocess.CompletedProcess:
    table = table or folder.parent / "table.csv"
    return cli("adapter", "test", folder, "--input", f"parameters={PARAMETERS}", "--input", f"table={table}", *extra)


def test_init_writes_the_template_as_a_git_repository(cli, adapter: Path) -> None:
    descriptor = json.loads((adapter / "descriptor.json").read_text())
    assert descriptor["name"] == "my-adapter"
    for name in ("install.sh", "execute.sh", "processor.py", "requirements.txt", "README.md"):
        assert (adapter / name).is_file()
    log = subprocess.run(["git", "log", "--oneline"], cwd=adapter, capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 1
    status = subprocess.run(["git", "status", "--porcelain"], cwd=adapter, capture_output=True, text=True, check=True)
    assert status.stdout == ""  # everything committed: ready to push

    again = cli("adapter", "init", adapter)
    assert again.returncode == 2
    assert "already exists" in again.stderr

    bad_name = cli("adapter", "init", adapter.parent / "other", "--name", "bad\tname")
    assert bad_name.returncode == 2
    assert "Invalid descriptor" in bad_name.stderr
    assert not (adapter.parent / "other").exists()  # nothing written


def test_template_passes_and_prints_progress_messages_and_outputs(cli, adapter: Path, tmp_path: Path) -> None:
    result = _test(cli, adapter)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Descriptor OK: my-adapter" in out
    assert "Running install.sh default" in out and "Running execute.sh default" in out
    assert out.index("progress: 10%") < out.index("progress: 80%") < out.index("progress: 100%")
    assert "message [info]: summed 2 rows" in out
    assert "output announced: result" in out
    assert 'result: {"total": 7.0, "rows": 2}' in out
    assert out.rstrip().endswith("Adapter test passed: my-adapter (default).")

    work = tmp_path / "work"
    as_json = cli(
        "--json",
        "adapter",
        "test",
        adapter,
        "--config",
        "default",
        "--work-dir",
        work,
        "--input",
        f"parameters={PARAMETERS}",
        "--input",
        f"table={tmp_path / 'table.csv'}",
    )
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["progress"] == [10, 80, 100]
    assert document["messages"] == [{"severity": "info", "message": "summed 2 rows"}]
    # the RTI's layout: the adapter copied as a deployment checks it out, one working folder per job
    assert document["outputs"]["result"] == str(work / "jobs" / "local-test" / "result")
    assert (work / "procs" / "local" / "repo" / "descriptor.json").is_file()
    assert (work / "procs" / "local" / "install.log").read_text().startswith("Installing for the default")
    assert (work / "logs" / "local-test" / "execute_stdout.log").is_file()


def test_a_bad_descriptor_is_reported(cli, adapter: Path) -> None:
    descriptor = json.loads((adapter / "descriptor.json").read_text())
    del descriptor["configurations"]
    (adapter / "descriptor.json").write_text(json.dumps(descriptor))
    result = _test(cli, adapter)
    assert result.returncode == 2
    assert "Error: Invalid descriptor at 'descriptor': 'configurations' is a required property" in result.stderr

    (adapter / "descriptor.json").write_text("{not json")
    result = _test(cli, adapter)
    assert result.returncode == 2
    assert "descriptor.json is not valid JSON" in result.stderr


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (['parameters={"factor": "x"}', "table=TABLE"], "Input 'parameters' does not match its data_schema"),
        (['parameters={"factor": 2}'], "Missing input(s): table"),
        (['parameters={"factor": 2}', "table=TABLE", "other=1"], "Input 'other' is not an input of my-adapter"),
        (
            ['parameters={"factor": 2}', "table=no-such-file.csv"],
            "Input 'table': 'no-such-file.csv' is neither a file nor a JSON value",
        ),
        (["parameters", "table=TABLE"], "Invalid input 'parameters': use NAME=FILE or NAME=JSON"),
    ],
)
def test_bad_inputs_are_reported(cli, adapter: Path, inputs: list[str], message: str) -> None:
    args = [item.replace("TABLE", str(adapter.parent / "table.csv")) for item in inputs]
    result = cli("adapter", "test", adapter, *[a for item in args for a in ("--input", item)])
    assert result.returncode == 2
    assert f"Error: {message}" in result.stderr
    assert "Running" not in result.stdout  # nothing ran


def test_a_forgotten_output_fails_the_run(cli, adapter: Path) -> None:
    processor = adapter / "processor.py"
    processor.write_text(processor.read_text().replace('    print_output("result")', "    pass"))
    result = _test(cli, adapter)
    assert result.returncode == 1
    assert "Error: Output 'result' was not announced (trigger:output:result)" in result.stderr
    assert "uncommitted changes" in result.stderr  # the RTI would deploy the committed version


def test_a_failing_execute_and_an_unknown_config_are_reported(cli, adapter: Path) -> None:
    processor = adapter / "processor.py"
    processor.write_text(processor.read_text().replace("def run(wd):", "def run(wd):\n    raise SystemExit('boom')"))
    result = _test(cli, adapter)
    assert result.returncode == 1
    assert "Error: execute.sh exited with code 1: boom" in result.stderr
    assert "Logs and working folder kept in" in result.stdout

    result = _test(cli, adapter, "--config", "nscc")
    assert result.returncode == 2
    assert "Error: Configuration 'nscc' is not in the descriptor (configurations: default)" in result.stderr


def test_agent_kind(cli, tmp_path: Path) -> None:
    """An agent runs as the RTI runs it: started until trigger:ready, the job on stdin, ended by trigger:done."""
    folder = tmp_path / "my-agent"
    assert cli("adapter", "init", folder, "--kind", "agent").returncode == 0
    assert json.loads((folder / "descriptor.json").read_text())["kind"] == "agent"
    assert "trigger:done" in (folder / "processor.py").read_text()
    (tmp_path / "table.csv").write_text("value\n1\n2.5\n")
    result = _test(cli, folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waiting for trigger:ready" in result.stdout and "job sent on stdin" in result.stdout
    assert 'result: {"total": 7.0, "rows": 2}' in result.stdout


@pytest.mark.parametrize(
    ("a", "reason"),
    [
        (13, "exited"),  # crash-agent crashes on 13
        (15, "error"),  # and reports trigger:error on 15
    ],
)
def test_agent_that_fails_a_job_fails_the_test(cli, tmp_path: Path, a: int, reason: str) -> None:
    from tests.rti.rti_support import adapter_repo

    repo, _ = adapter_repo(tmp_path / "repo", "crash-agent")
    result = cli("adapter", "test", repo / "crash-agent", "--input", f'a={{"v": {a}}}', "--input", 'b={"v": 1}')
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stderr.lower()
    ok = cli("adapter", "test", repo / "crash-agent", "--input", 'a={"v": 1}', "--input", 'b={"v": 2}')
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert 'c: {"v": 3}' in ok.stdout


def test_an_adapter_in_a_repository_folder_runs_with_the_whole_repository(cli, tmp_path: Path) -> None:
    from tests.rti.rti_support import adapter_repo

    repo, _ = adapter_repo(tmp_path / "repo", "abc", extra={"common/notes.txt": "shared by the adapters"})
    work = tmp_path / "work"
    result = cli(
        "adapter",
        "test",
        repo / "abc",
        "--config",
        "nscc",
        "--work-dir",
        work,
        "--input",
        'a={"v": 1}',
        "--input",
        'b={"v": 2}',
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'c: {"v": 3}' in result.stdout
    assert "message [info]: 1 + 2 = 3" in result.stdout
    clone = work / "procs" / "local" / "repo"  # the RTI's layout: the repository, the adapter in its folder
    assert (clone / "common" / "notes.txt").is_file() and (clone / "abc" / "descriptor.json").is_file()
    assert not (clone / ".git").exists()

    inside = cli(
        "adapter",
        "test",
        repo / "abc",
        "--config",
        "nscc",
        "--work-dir",
        repo / "run",
        "--input",
        'a={"v": 1}',
        "--input",
        'b={"v": 2}',
    )
    assert inside.returncode == 2
    assert "must be outside the adapter's repository" in inside.stderr
