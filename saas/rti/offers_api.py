"""REST routes of resource packages, account levels and offers (issue 18), under `/rti` next to `saas.rti.api`.
Thin: parse, authenticate, call the RTI service and the modules of each concept."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from saas.rest.auth import SignedIdentity
from saas.rti import offers
from saas.rti.levels import AccountLevel, LevelParameters
from saas.rti.offers import Offer, OfferParameters
from saas.rti.packages import Package
from saas.rti.service import RTIService

__all__ = ["router"]

router = APIRouter(prefix="/rti", tags=["rti"])
IidPath = Annotated[str, Path(pattern=r"^[0-9a-z]{64}$", description="identity ID")]


def _rti(request: Request) -> RTIService:
    return request.app.state.node.rti


@router.get("/packages", response_model=list[Package])
async def get_packages(request: Request) -> list[Package]:
    """The node's resource packages (anonymous): what a job may name as its `package`."""
    return list(_rti(request).packages.values())


@router.get("/levels", response_model=list[AccountLevel])
async def get_levels(request: Request, caller: SignedIdentity) -> list[AccountLevel]:
    """The levels the node owner assigned (node owner only)."""
    return _rti(request).levels.list(caller)


@router.get("/levels/{iid}", response_model=AccountLevel)
async def get_level(iid: IidPath, request: Request, caller: SignedIdentity) -> AccountLevel:
    """An identity's level and the packages it may ask for (to the node owner, or to that identity)."""
    return _rti(request).levels.show(caller, iid)


@router.put("/levels/{iid}", response_model=AccountLevel)
async def set_level(iid: IidPath, params: LevelParameters, request: Request, caller: SignedIdentity) -> AccountLevel:
    """Assign a level (node owner only); stored signed by the node."""
    rti = _rti(request)
    return await rti.levels.set(caller, iid, params, set(rti.packages))


@router.delete("/levels/{iid}", response_model=AccountLevel)
async def reset_level(iid: IidPath, request: Request, caller: SignedIdentity) -> AccountLevel:
    """Forget an identity's level (node owner only): it has the node's default level again."""
    return await _rti(request).levels.reset(caller, iid)


@router.post("/offers", response_model=Offer)
async def make_offer(params: OfferParameters, request: Request, caller: SignedIdentity) -> Offer:
    """Can this node run the task for the caller? A signed, expiring offer: can or cannot with every reason, the
    package the job would get, whether the processor is deployed, data locality, estimated queue wait, quota left."""
    return await offers.make_offer(_rti(request), request.app.state.node, caller, params)
