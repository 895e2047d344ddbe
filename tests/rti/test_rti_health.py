"""Health, diagnostics and /metrics of a real node after real jobs (processes, SQLite, REST on 127.0.0.1):
successful, failing and long-running jobs of the example adapters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from rti_support import RTIEnv

from saas.ops.diagnostics import Diagnostics
from saas.ops.proxy import HealthProxy
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(240)


def _metrics(env: RTIEnv) -> dict[str, Any]:
    """name -> list of (labels, value) for every sample, parsed with the Prometheus text parser."""
    response = httpx.get(env.node.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def _value(samples: dict[str, Any], name: str, **labels: str) -> float:
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0])


def test_diagnostics_after_failing_jobs(env: RTIEnv) -> None:
    ok, bad = env.deploy("abc"), env.deploy("fail")
    for job in [env.submit_abc(ok) for _ in range(2)] + [env.submit_abc(bad) for _ in range(5)]:
        env.wait(job)

    with HealthProxy(env.node.address) as proxy:
        health = proxy.get_node_health()
        public = proxy.get_diagnostics()
    assert health.jobs["successful"] == 2 and health.jobs["failed"] == 5 and health.queue_length == 0
    processors = {p.proc_id: p for p in health.processors}
    assert processors[ok].name == "test-proc" and processors[ok].state == "ready"
    job_time = processors[ok].job_time
    assert job_time is not None and job_time["count"] == 2
    assert job_time["min"] <= job_time["median"] <= job_time["max"]
    assert processors[bad].job_time is None  # no successful job to time

    # the public part: counts per processor, no reasons, no job IDs, no log lines
    assert not public.owner and public.logs is None and public.jobs_read == 7
    assert [(f.proc_id, f.count) for f in public.failures] == [(bad, 5)]
    assert "owner" in public.failures[0].reason
    assert public.failures[0].first_seen <= public.failures[0].last_seen
    assert all(j.job_id is None for j in public.slowest) and len(public.slowest) == 7
    assert [w.kind for w in public.warnings] == ["failures"]
    assert f"processor {bad}: 5 of its last 5 jobs failed" in public.warnings[0].message

    # the node owner: reasons, job IDs and the node's last log lines
    with HealthProxy(env.node.address, env.owner) as proxy:
        owner = proxy.get_diagnostics(signed=True)
    assert owner.owner and owner.logs is not None
    assert len(owner.failures) == 1 and owner.failures[0].count == 5
    assert "exit" in owner.failures[0].reason.lower() or "code" in owner.failures[0].reason.lower()
    assert all(j.job_id for j in owner.slowest)
    assert "most often" in owner.warnings[0].message

    # anyone else who signs gets the public part only
    with HealthProxy(env.node.address, env.alice) as proxy:
        other = proxy.get_diagnostics(signed=True)
    assert not other.owner and other.logs is None and "owner" in other.failures[0].reason


def test_log_lines_are_the_owners_only_and_hold_what_the_node_logged(env: RTIEnv) -> None:
    import logging

    logging.getLogger("saas.test").error("a test error with marker 7f3a: job Xy12ab34CD56ef78GH90ij in /srv/data/x")
    with HealthProxy(env.node.address, env.owner) as proxy:
        report = proxy.get_diagnostics(signed=True)
        health = proxy.get_node_health()
    assert report.logs is not None
    assert any("marker 7f3a: job Xy12ab34CD56ef78GH90ij in /srv/data/x" in line for line in report.logs)
    # anyone sees the last error with its identifiers and paths masked
    assert health.last_error is not None and health.last_error["logger"] == "saas.test"
    assert health.last_error["message"] == "a test error with marker 7f3a: job … in <path>"


def test_a_forged_owner_signature_is_refused(env: RTIEnv) -> None:
    """Claiming to be the node owner without its key: the request is refused, not answered with the owner's part."""
    from saas.core.signing import sign_request

    headers = sign_request(
        env.alice,
        "GET",
        "/api/v1/db/node/diagnostics",
        env.node.node.iid,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    )
    headers["saas-iid"] = env.node.node.iid  # alice's signature, the owner's name
    response = httpx.get(env.node.url + "/api/v1/db/node/diagnostics", headers=headers)
    assert response.status_code == 401, response.text
    assert "logs" not in response.json()


def test_long_running_job_is_reported(env: RTIEnv) -> None:
    slow = env.deploy("slow")
    for job in [env.submit_abc(slow, a=0.2) for _ in range(3)]:
        env.wait(job)
    long_job = env.submit_abc(slow, a=30)
    with HealthProxy(env.node.address, env.owner) as proxy:
        report = wait_until(
            lambda: (r := proxy.get_diagnostics(signed=True)).long_running and r,
            30,
            interval=0.5,
            what="the long job reported",
        )
        health = proxy.get_node_health()
    assert isinstance(report, Diagnostics)
    assert [j.job_id for j in report.long_running] == [long_job]
    assert report.long_running[0].expected is not None
    assert report.long_running[0].seconds > report.long_running[0].expected >= 5
    assert "long-run" in [w.kind for w in report.warnings]
    processor = next(p for p in health.processors if p.proc_id == slow)
    assert processor.running == 1 and processor.queued == 0
    assert health.jobs["running"] == 1
    with env.rti(env.alice) as rti:
        rti.cancel_job(long_job, env.alice)


def test_metrics_parse_and_count(env: RTIEnv, tmp_path: Any) -> None:
    proc = env.deploy("abc")
    before = _metrics(env)
    payload = tmp_path / "payload.json"
    payload.write_text('{"v": 1}' + " " * 5000)
    with env.dor(env.alice) as dor:
        obj = dor.add_data_object(payload, env.alice.identity, False, False, "JSONObject", "json")
        dor.get_content(obj.obj_id, env.alice, tmp_path / "back.json")
    for job in [env.submit_abc(proc) for _ in range(2)]:
        env.wait(job)
    after = _metrics(env)

    uploaded = _value(after, "saas_dor_upload_bytes_total") - _value(before, "saas_dor_upload_bytes_total")
    downloaded = _value(after, "saas_dor_download_bytes_total") - _value(before, "saas_dor_download_bytes_total")
    assert uploaded >= payload.stat().st_size  # the two inputs `a` are uploaded too
    assert downloaded >= payload.stat().st_size
    assert _value(after, "saas_jobs", state="successful") == 2
    assert _value(after, "saas_job_queue_length") == 0
    assert _value(after, "saas_job_duration_seconds_count", processor=proc, state="successful") == 2
    assert _value(after, "saas_job_duration_seconds_bucket", processor=proc, state="successful", le="+Inf") == 2
    assert _value(after, "saas_processor_jobs", processor=proc, state="running") == 0
    assert _value(after, "saas_peers_online") == 0 and _value(after, "saas_nodes_known") == 1
    assert _value(after, "saas_disk_free_bytes") > 0
    routes = {lab["route"] for lab, _ in after["saas_http_request_duration_seconds_count"]}
    assert any(r.endswith("/dor/{obj_id}/content") for r in routes), routes
    assert _value(after, "saas_node_info", iid=env.node.node.iid) == 1


def test_metrics_route_labels_stay_bounded(env: RTIEnv) -> None:
    """Unknown paths and methods do not each make a new series."""
    for i in range(20):
        httpx.request("PROPFIND", env.node.url + f"/no/such/path/{i}")
        httpx.get(env.node.url + f"/api/v1/nothing-{i}")
    samples = _metrics(env)
    labels = {(lab["method"], lab["route"]) for lab, _ in samples["saas_http_request_duration_seconds_count"]}
    assert ("other", "unmatched") in labels and ("GET", "unmatched") in labels
    assert not any("no/such" in route or "nothing-" in route for _, route in labels)


@pytest.mark.slow
def test_doctor_checks_a_local_slurm_backend(env: RTIEnv, slurm: Any, tmp_path: Any, monkeypatch: Any) -> None:
    """A processor on the slurm backend: the doctor finds it ready and asks the real cluster with `sinfo`; with a
    SLURM configuration that names no controller, `sinfo` fails and the doctor says how to fix it."""
    from saas.ops.doctor import Doctor

    proc_id = env.deploy("abc", deploy_args={"backend": "slurm"})
    checks = {c.name: c for c in Doctor(env.node.address, lambda: env.owner, None, temp_dir=tmp_path).run()}
    assert checks[f"processor {proc_id[:16]} (slurm)"].ok
    assert checks["backend slurm"].ok, (checks["backend slurm"], slurm.logs())
    assert "sinfo answers" in checks["backend slurm"].detail

    broken = tmp_path / "slurm.conf"
    broken.write_text("ClusterName=none\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=1\n")
    monkeypatch.setenv("SLURM_CONF", str(broken))
    checks = {c.name: c for c in Doctor(env.node.address, lambda: env.owner, None, temp_dir=tmp_path).run()}
    failed = checks["backend slurm"]
    assert not failed.ok and failed.fix is not None and "slurmctld" in failed.fix
