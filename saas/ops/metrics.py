"""`GET /metrics`: the node's metrics in the Prometheus text format (issue 19, item 5), with `prometheus-client`.

Each node has its own registry (nodes in one process do not mix their figures). Two kinds of figures:

- **Counted as they happen** (reset when the node restarts, as Prometheus expects of counters):
  `saas_http_request_duration_seconds{method,route}` (a histogram; `route` is the route's template, so the label
  set stays bounded), `saas_dor_upload_bytes_total` (bodies received by `/dor/add-c`),
  `saas_dor_download_bytes_total` (content served: the length of each successful `/content` response), and
  `saas_job_duration_seconds{processor,state}` (a histogram of each final job's time from submission to its end).
- **Read at each scrape** from the node's health (`saas.ops.health`): jobs on the board by state, queue length,
  running and queued jobs per processor, agent instances by state, peers online, nodes known, uptime, disk and
  memory.

`MetricsMiddleware` is the pure ASGI layer that measures requests; the counting never reads or delays a body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from saas.node import Node
    from saas.ops.health import NodeHealth
    from saas.rti.records import ActiveJob

__all__ = ["CONTENT_TYPE", "MetricsMiddleware", "NodeMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})  # others count as "other"
JOB_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))  # seconds


class NodeMetrics:
    def __init__(self, node: Node):
        self._node = node
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "saas_http_request_duration_seconds",
            "Time to answer a REST request (including streaming the answer)",
            ["method", "route"],
            registry=self.registry,
        )
        self.upload_bytes = Counter(
            "saas_dor_upload_bytes", "Bytes of content received by the DOR (add-c bodies)", registry=self.registry
        )
        self.download_bytes = Counter(
            "saas_dor_download_bytes",
            "Bytes of content served by the DOR (successful content responses)",
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "saas_job_duration_seconds",
            "Time of a job from its submission to its final state",
            ["processor", "state"],
            buckets=JOB_BUCKETS,
            registry=self.registry,
        )

    def job_finished(self, active: ActiveJob) -> None:
        """The RTI's listener of final jobs (`RTIService.on_finish`)."""
        timeline = active.machine.timeline
        if not timeline:
            return
        seconds = max(0, int(timeline[-1]["time"]) - int(timeline[0]["time"])) / 1000
        self.job_seconds.labels(active.job.proc_id, active.machine.state.value).observe(seconds)

    async def render(self) -> bytes:
        """The exposition text: the counters and histograms, and the node's health as gauges."""
        health = await self._node.health.own()
        scrape = _Scrape(self.registry, list(_gauges(health)))
        return await asyncio.to_thread(generate_latest, scrape)


class _Scrape:
    """What `generate_latest` reads: the registry's metrics and this scrape's gauges."""

    def __init__(self, registry: CollectorRegistry, gauges: list[Metric]):
        self._registry, self._gauges = registry, gauges

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from self._gauges


def _gauge(name: str, documentation: str, value: float | None = None, labels: list[str] | None = None) -> Any:
    return GaugeMetricFamily(name, documentation, value=value, labels=labels)


def _gauges(health: NodeHealth) -> Iterator[Metric]:
    info = _gauge("saas_node_info", "The node's identity and version (always 1)", labels=["iid", "version"])
    info.add_metric([health.iid, health.version], 1)
    yield info
    yield _gauge("saas_uptime_seconds", "Seconds since the node started", health.uptime)
    jobs = _gauge("saas_jobs", "Jobs on the RTI's board by state", labels=["state"])
    for state, count in sorted(health.jobs.items()):
        jobs.add_metric([state], count)
    yield jobs
    yield _gauge("saas_job_queue_length", "Jobs waiting to start", health.queue_length)
    per_processor = _gauge(
        "saas_processor_jobs", "Jobs of a processor that run or wait to start", labels=["processor", "state"]
    )
    instances = _gauge("saas_agent_instances", "Agent instances by state", labels=["processor", "state"])
    for p in health.processors:
        per_processor.add_metric([p.proc_id, "running"], p.running)
        per_processor.add_metric([p.proc_id, "queued"], p.queued)
        counts: dict[str, int] = {}
        for instance in p.instances or []:
            counts[str(instance["state"])] = counts.get(str(instance["state"]), 0) + 1
        for state, count in sorted(counts.items()):
            instances.add_metric([p.proc_id, state], count)
    yield per_processor
    yield instances
    yield _gauge("saas_peers_online", "Peers this node is connected to", health.peers_online)
    yield _gauge("saas_nodes_known", "Nodes this node knows (itself included)", health.nodes_known)
    if health.disk:
        yield _gauge("saas_disk_free_bytes", "Free bytes of the datastore's file system", health.disk["free"])
        yield _gauge("saas_disk_total_bytes", "Size of the datastore's file system", health.disk["total"])
    if health.memory:
        yield _gauge("saas_memory_available_bytes", "Memory available on the machine", health.memory["available"])
    yield _gauge("saas_cpu_load1", "The machine's load average over one minute", health.cpu.get("load1", 0.0))


class MetricsMiddleware:
    """Measures every HTTP request: latency by method and route template, upload and download bytes."""

    def __init__(self, app: Any, metrics: NodeMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics, start = self.metrics, time.perf_counter()
        path, method = scope["path"], scope["method"] if scope["method"] in METHODS else "other"
        upload = path.endswith("/dor/add-c")
        download = method == "GET" and path.endswith("/content")

        async def counting_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                metrics.upload_bytes.inc(len(message.get("body", b"")))
            return message

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] in (200, 206):
                for name, value in message.get("headers", []):
                    if name.lower() == b"content-length" and value.isdigit():
                        metrics.download_bytes.inc(int(value))
            await send(message)

        try:
            await self.app(scope, counting_receive if upload else receive, counting_send if download else send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.request_seconds.labels(method, route).observe(time.perf_counter() - start)
