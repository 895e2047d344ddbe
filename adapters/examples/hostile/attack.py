"""A hostile adapter (for the isolation tests): tries to reach what a job must never reach and reports, for each
attempt, "blocked: <why>" or "SUCCEEDED: <what it got>". Stdlib only.

Targets come from the job's `targets` input when there is one (the test knows the node's pid, datastore, keystore
and password and another job's folder); without it (install.sh) they are guessed from where the adapter sits, as a
real attacker would: `<datastore>/rti/procs/<id>/repo/<folder>`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def attempt(report: dict[str, str], name: str, action) -> None:  # type: ignore[no-untyped-def]
    try:
        got = action()
    except Exception as e:  # noqa: BLE001 - every failure is a block
        report[name] = f"blocked: {type(e).__name__}: {e}"[:300]
        return
    report[name] = f"SUCCEEDED: {str(got)[:200]}" if got else "blocked: nothing found"


def survey(targets: dict, own: Path | None) -> dict[str, str]:  # type: ignore[type-arg]
    datastore = Path(targets.get("datastore") or HERE.parents[4])
    password = targets.get("password") or ""
    pid = targets.get("node_pid")
    report: dict[str, str] = {}

    def proc_file(name: str) -> str:
        data = Path(f"/proc/{pid}/{name}").read_bytes()
        return f"{name} of the node read ({len(data)} bytes)"

    if pid:
        attempt(report, "node_cmdline", lambda: proc_file("cmdline"))
        attempt(report, "node_environ", lambda: proc_file("environ"))
        attempt(report, "signal_node", lambda: os.kill(int(pid), 0) or "signalled the node")

    def password_anywhere() -> str:
        if not password:
            return ""
        for entry in Path("/proc").iterdir():
            for name in ("cmdline", "environ"):
                try:
                    if password.encode() in (entry / name).read_bytes():
                        return f"password in {entry}/{name}"
                except OSError:
                    continue
        return ""

    attempt(report, "password_in_proc", password_anywhere)
    attempt(report, "own_environment", lambda: [k for k in os.environ if k.startswith("SAAS_") and k != "SAAS_JOB_ID"])
    # the path down to its own folder is visible (empty scaffolding): anything else of the datastore is not
    attempt(report, "list_datastore", lambda: [n for n in os.listdir(datastore) if n != "rti"])
    attempt(report, "read_dor_content", lambda: [p.read_bytes()[:10] for p in (datastore / "dor" / "content").iterdir()])
    attempt(report, "write_dor_content", lambda: (datastore / "dor" / "content" / "planted").write_text("x") or "planted")

    def catalog() -> str:
        found = list(datastore.glob("dor/*.sqlite")) or list(datastore.glob("**/*.sqlite"))
        for path in found:
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE IF NOT EXISTS planted (x)")
            db.commit()
            return f"wrote into {path}"
        return ""

    attempt(report, "write_catalog", catalog)

    def board() -> str:
        path = datastore / "rti" / "jobs.sqlite"
        rows = sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("SELECT job FROM jobs").fetchall()
        return f"read {len(rows)} jobs"

    attempt(report, "read_job_board", board)
    if targets.get("keystore"):
        attempt(report, "read_keystore", lambda: Path(targets["keystore"]).read_bytes()[:20])
    attempt(report, "read_home_keystores", lambda: os.listdir(Path("/root/.keystore")))
    for i, other in enumerate(Path(p) for p in targets.get("other_wds", [])):
        attempt(report, f"read_other_job_{i}", lambda other=other: os.listdir(other))
        attempt(report, f"write_other_job_{i}", lambda other=other: (other / "planted").write_text("x") or "planted")
    attempt(report, "other_jobs", lambda: [p for p in (datastore / "rti" / "jobs").iterdir() if own is None or p != own])
    if own is not None:  # (install.sh may write its own folder)
        attempt(report, "write_adapter", lambda: (HERE / "planted").write_text("x") or "planted")
    attempt(report, "shadow", lambda: Path("/etc/shadow").read_text()[:10])
    attempt(report, "setuid_root", lambda: os.setuid(0) or "became root")
    return report


def daemon(marker: str) -> None:
    """Leave processes behind: a double-forked, setsid sleeper whose command line carries `marker`."""
    subprocess.Popen(
        ["setsid", "sh", "-c", f"sleep 300 # {marker}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def run_job(wd: Path) -> None:
    targets = json.loads((wd / "targets").read_text())
    mode = targets.get("mode", "survey")
    if mode == "survey":
        report = survey(targets, wd)
        if targets.get("marker"):
            daemon(targets["marker"])
        (wd / "report").write_text(json.dumps(report))
        print("trigger:output:report", flush=True)
    elif mode == "forkbomb":
        while True:
            try:
                os.fork()
            except OSError:
                pass
    elif mode == "memory":
        hog = []
        while True:
            hog.append(bytearray(64 * 2**20))
    elif mode == "sleep":
        import time

        time.sleep(3600)
    elif mode == "disk":  # fills the job folder (a package's disk is checked when the adapter ends)
        (wd / "filler").write_bytes(b"\0" * int(targets.get("mib", 1) * 2**20))
        (wd / "report").write_text(json.dumps({"mib": targets.get("mib", 1)}))
        print("trigger:output:report", flush=True)


def main() -> None:
    if sys.argv[1] == "install":
        report = survey({}, None)
        daemon("saas-hostile-install")
        print(json.dumps(report, indent=1))
        bad = [name for name, result in report.items() if result.startswith("SUCCEEDED")]
        if bad:
            print(f"ATTACKS THAT SUCCEEDED: {bad}")
            sys.exit(3)
        return
    if sys.argv[1] == "agent":
        for line in sys.stdin:
            job = json.loads(line)
            wd = Path(job["wd"])
            run_job(wd)
            print("trigger:done", flush=True)
        return
    run_job(Path(sys.argv[1]))


if __name__ == "__main__":
    main()
