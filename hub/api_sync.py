"""The store side of the sync contract: events in, feeds out, erasure acks, heartbeats.

Every path is ``/v1/stores/{store}/...`` and needs that store's key (``hub.roles``). Handlers
are plain ``def``: FastAPI runs them in its thread pool, where the SQLite calls belong.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hub.api_catalog import json_body
from hub.auth import Allowed
from hub.context import Ctx, bad_request
from hub.dsr import ack_erasure
from hub.feeds import feed_limit, parse_cursor
from hub.ingest import ingest
from hub.members import announce
from hub.profile_feed import erasures_page, profiles_page
from hub.stores import record_heartbeat
from models.identity import SUBJECT_PATTERN

router = APIRouter(prefix="/v1/stores/{store}", tags=["sync"])

Cursor = Annotated[str | None, Query(max_length=40)]
Limit = Annotated[int | None, Query()]


class Announce(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, Field(pattern=SUBJECT_PATTERN.pattern)]


class Heartbeat(BaseModel):
    """Lenient on purpose: a newer edge may send more; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    model_version: str | None = None
    state: str | None = None
    outbox_pending: int | None = None
    feeds: dict[str, str | int | None] = {}
    staleness_s: float | None = None
    active_visits: int | None = None


@router.post("/events")
async def push_events(store: str, request: Request, context: Ctx,
                      _: Allowed) -> dict[str, Any]:
    """A batch of outbox events (≤ sync.max_events_per_batch), idempotent by event_id.
    Body checked by hand (size first, then shape): each event is validated on its own so
    one bad event is refused alone instead of failing the batch."""
    body = await json_body(request, context)
    if not isinstance(body, dict) or set(body) != {"events"} or not isinstance(
        body["events"], list
    ):
        raise bad_request(422, "bad_batch", detail='expected {"events": [...]}')
    limit = context.settings.sync.max_events_per_batch
    if len(body["events"]) > limit:
        raise bad_request(413, "batch_too_large", max=limit)
    result = await asyncio.to_thread(ingest, context.db, store, body["events"],
                                     context.settings.relevance)
    count_events(context, store, result)
    return result.as_dict()


def count_events(context: Any, store: str, result: Any) -> None:
    """``storeside_hub_events_total{store, outcome}``: accepted, duplicate, refused_<reason>
    (the store label is the caller's own store: authorize admits no other)."""
    metrics = context.extras.get("metrics")
    if metrics is None:
        return
    counts = {"accepted": len(result.accepted), "duplicate": len(result.duplicates)}
    for refusal in result.refused:
        outcome = f"refused_{refusal.get('reason', 'other')}"
        counts[outcome] = counts.get(outcome, 0) + 1
    for outcome, n in counts.items():
        if n:
            metrics.events.labels(store, outcome).inc(n)


@router.get("/feed/profiles")
def profile_feed(store: str, context: Ctx, _: Allowed, cursor: Cursor = None,
                 limit: Limit = None) -> Response:
    """Profiles relevant to this store (upserts) and the deletes it must apply."""
    page = profiles_page(context.db, store, parse_cursor(cursor),
                         feed_limit(limit, context.settings.sync), context.settings.relevance)
    return page.response()


@router.get("/erasures")
def erasure_feed(store: str, context: Ctx, _: Allowed, cursor: Cursor = None,
                 limit: Limit = None) -> Response:
    """Every erasure (a member may have been anywhere); ack each one when applied."""
    page = erasures_page(context.db, parse_cursor(cursor), feed_limit(limit, context.settings.sync))
    return page.response()


@router.post("/erasures/{erasure_id}/ack")
def erasure_ack(store: str, erasure_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    acked_at = ack_erasure(context.db, store, erasure_id)
    if acked_at is None:
        raise bad_request(404, "unknown_erasure")
    return {"erasure_id": erasure_id, "store": store, "acked_at": acked_at}


@router.post("/announce", status_code=202)
def announce_approach(store: str, body: Announce, context: Ctx, _: Allowed) -> dict[str, str]:
    """Geofence approach: the member's profile enters this store's feed (next poll)."""
    return {"status": announce(context.db, store, body.subject, context.settings.relevance)}


@router.post("/heartbeat")
def heartbeat(store: str, body: Heartbeat, context: Ctx, _: Allowed) -> dict[str, Any]:
    return record_heartbeat(context.db, store, body.model_dump())
