"""`saas.sdk.adapter`: the trigger helpers and the agent loop, run as a real agent process speaking the protocol on
stdin/stdout; the copy the example agent ships is the same file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import saas.sdk.adapter as adapter

ROOT = Path(__file__).resolve().parents[2]
AGENT = """
import json, sys
sys.path.insert(0, {sdk!r})
from adapter import agent_jobs, print_output, print_progress

for job in agent_jobs():
    if job.job_id == "open":
        print_progress(50)
        continue  # left open: done when the loop asks for the next job
    with job:
        a = json.loads(job.path("a").read_text())["v"]
        if a == 0:
            raise ValueError("a must not be 0\\nreally")
        job.path("c").write_text(json.dumps({{"v": a * 2}}))
        print_output("c")
"""


def test_agent_loop(tmp_path: Path) -> None:
    script = tmp_path / "agent.py"
    script.write_text(AGENT.format(sdk=str(ROOT / "saas" / "sdk")))
    jobs = []
    for n, a in enumerate([3, 0, 5]):
        wd = tmp_path / f"job{n}"
        wd.mkdir()
        (wd / "a").write_text(json.dumps({"v": a}))
        jobs.append(json.dumps({"job_id": f"job{n}", "wd": str(wd)}))
    stdin = "\n".join([jobs[0], "not json", jobs[1], json.dumps({"job_id": "open", "wd": "x"}), jobs[2]]) + "\n"
    result = subprocess.run(
        [sys.executable, str(script)], input=stdin, capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.splitlines() == [
        "trigger:ready",
        "trigger:output:c",
        "trigger:done",
        "trigger:error:invalid job line",
        "trigger:error:ValueError: a must not be 0 really",
        "trigger:progress:50",
        "trigger:done",
        "trigger:output:c",
        "trigger:done",
    ]
    assert json.loads((tmp_path / "job2" / "c").read_text()) == {"v": 10}


def test_public_surface_and_vendored_copy() -> None:
    assert adapter.__all__ == ["AgentJob", "agent_jobs", "print_message", "print_output", "print_progress"]
    vendored = ROOT / "adapters" / "examples" / "abc-agent" / "saas_adapter.py"
    assert vendored.read_text() == (ROOT / "saas" / "sdk" / "adapter.py").read_text()
