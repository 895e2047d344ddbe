"""REST routes of resource packages, account levels and offers (issue 18), under `/rti` next to `saas.rti.api`.
Thin: parse, authenticate, call the RTI service and the modules of each concept."""

from __future__ import annotations

from fastapi import APIRouter, Request

from saas.rti.packages import Package
from saas.rti.service import RTIService

__all__ = ["router"]

router = APIRouter(prefix="/rti", tags=["rti"])


def _rti(request: Request) -> RTIService:
    return request.app.state.node.rti


@router.get("/packages", response_model=list[Package])
async def get_packages(request: Request) -> list[Package]:
    """The node's resource packages (anonymous): what a job may name as its `package`."""
    return list(_rti(request).packages.values())
