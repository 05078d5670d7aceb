"""Model rollout over HTTP: what a store should run, the signed bundle, the store's report,
and the central team's view and controls (list, rollout, rollback, status per store)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from hub import model_registry as registry
from hub.auth import Allowed
from hub.context import Ctx, bad_request
from hub.stores import STORE_ID

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["models"])

VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


@router.get("/stores/{store}/model", response_model=None)
def store_model(store: str, context: Ctx, _: Allowed) -> dict[str, Any] | Response:
    """The version this store should run (signature included), or 204 when none is assigned."""
    assigned = registry.assignment(context.db, store)
    return assigned if assigned is not None else Response(status_code=204)


@router.get("/models/{version}/bundle")
def model_bundle(version: str, context: Ctx, _: Allowed) -> Response:
    """The signed archive (store key or admin). The edge checks sha256 and signature."""
    data = registry.archive(context.db, version)
    if data is None:
        raise bad_request(404, "unknown_version", version=version)
    return Response(data, media_type="application/gzip",
                    headers={"Cache-Control": "no-store",
                             "Content-Disposition": f'attachment; filename="{version}.tar.gz"'})


@router.post("/stores/{store}/model/report")
async def model_report(store: str, request: Request, context: Ctx,
                       _: Allowed) -> dict[str, Any]:
    """The edge says what became of a version: active, rolled_back or refused (+ why)."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise bad_request(422, "bad_json") from exc
    try:
        report = registry.parse_report(body)
    except ValueError as exc:
        raise bad_request(422, "bad_report", detail=str(exc)) from exc
    if registry.get(context.db, report["version"]) is None:
        raise bad_request(422, "unknown_version", version=report["version"])
    recorded = registry.record_report(context.db, store, report)
    if recorded and report["outcome"] != "active":
        logger.warning("store %s: model %s %s (%s)", store, report["version"],
                       report["outcome"], report["reason"])
    return {"recorded": recorded}


@router.get("/models")
def models(context: Ctx, _: Allowed) -> dict[str, Any]:
    """Published models, newest first, and the latest training runs (published or not)."""
    return {"models": registry.list_models(context.db),
            "trainings": registry.trainings(context.db)}


@router.get("/models/rollout")
def rollout_status(context: Ctx, _: Allowed) -> dict[str, Any]:
    """Per store: assigned version, previous, stage, running version, last report."""
    return {"stores": registry.rollout_status(context.db)}


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stores: list[Annotated[str, Field(pattern=STORE_ID.pattern)]] | None = None
    all: bool = False


@router.post("/models/{version}/rollout")
def rollout(version: Annotated[str, PathParam(pattern=VERSION)], body: RolloutRequest,
            context: Ctx, _: Allowed) -> dict[str, Any]:
    """Canary (``stores``) or every store (``all``); exactly one of them."""
    if body.all == (body.stores is not None):
        raise bad_request(422, "stores_or_all", detail="give either stores or all=true")
    try:
        changed = registry.rollout(context.db, version, None if body.all else body.stores)
    except registry.RolloutError as exc:
        raise bad_request(404 if exc.reason == "unknown_version" else 422, exc.reason,
                          detail=exc.detail) from exc
    return {"version": version, "assigned": changed}


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stores: list[Annotated[str, Field(pattern=STORE_ID.pattern)]] | None = None


@router.post("/models/rollback")
def rollback(body: RollbackRequest, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Stores (default: all assigned) back to the version they ran before."""
    try:
        return registry.rollback(context.db, body.stores)
    except registry.RolloutError as exc:
        raise bad_request(422, exc.reason, detail=exc.detail) from exc
