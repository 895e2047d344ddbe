"""REST routes of a node's operation (issue 19): health, diagnostics and `/metrics`.

- `GET /db/node/health`: this node's health (anonymous: counts and states only).
- `GET /db/health?deadline=S`: every known node's health, asked at once under one deadline; unreachable nodes with
  their last known health and since when they do not answer.
- `GET /db/node/diagnostics`: anonymous for the public part; signed by the node owner it adds failure reasons, job
  IDs and the last log lines.
- `GET /metrics` (outside the API prefix, where Prometheus looks): the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from saas.nodedb.fanout import DEFAULT_DEADLINE
from saas.ops.diagnostics import Diagnostics, diagnose
from saas.ops.health import MAX_DEADLINE, NetworkHealth, NodeHealth
from saas.ops.metrics import CONTENT_TYPE
from saas.rest.auth import OptionalIdentity

__all__ = ["metrics_router", "router"]

router = APIRouter(prefix="/db", tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/node/health", response_model=NodeHealth)
async def get_node_health(request: Request) -> NodeHealth:
    """This node's health: version, uptime, services, jobs, processors, machine, peers, last error; signed by the
    node."""
    return await request.app.state.node.health.own(signed=True)


@router.get("/health", response_model=list[NetworkHealth])
async def get_network_health(
    request: Request, deadline: float = Query(DEFAULT_DEADLINE, gt=0, le=MAX_DEADLINE)
) -> list[NetworkHealth]:
    """This node's health and every known node's, asked at once (at most `deadline` seconds)."""
    return await request.app.state.node.health.network(deadline)


@router.get("/node/diagnostics", response_model=Diagnostics)
async def get_diagnostics(request: Request, caller: OptionalIdentity) -> Diagnostics:
    """Failed jobs by processor and reason, slow and long-running jobs, warnings; for the node owner (signed) also
    the reasons, job IDs and the last log lines."""
    node = request.app.state.node
    health = await node.health.own()
    owner = caller is not None and caller.id == node.iid
    return await diagnose(node, owner, health, node.health.board_cache)


@metrics_router.get("/metrics", response_class=Response)
async def get_metrics(request: Request) -> Response:
    """The node's metrics in the Prometheus text format."""
    return Response(await request.app.state.node.metrics.render(), media_type=CONTENT_TYPE)
