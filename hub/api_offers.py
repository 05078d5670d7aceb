"""HTTP API for offers / campaigns and segments, and each store's offers feed.

Catalog role (or admin) for everything but the feed (the store's own key; hub.roles).
A segment-targeted offer is sent only to stores that hold at least one of the segment's
members, with those subjects in the item (``subjects``); see docs/hub.md "Offers and
segments" for why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response

from hub.api_catalog import json_body, refused
from hub.auth import Allowed
from hub.catalog_rows import InputError, optional_text
from hub.context import Ctx, HubContext, bad_request
from hub.feeds import feed_limit, parse_cursor
from hub.offer_store import OfferStore
from hub.offers import check_id, parse_offer
from hub.segment_store import SegmentInUse, SegmentStore, load_segment
from hub.segments import Segment, SegmentRuleError, compile_rule

router = APIRouter(prefix="/v1", tags=["offers"])

MAX_MEMBERS_LIST = 10_000


def offer_store(context: HubContext) -> OfferStore:
    return OfferStore(context.db, context.settings.catalog.offers_refresh_s)


# ---------------------------------------------------------------------- offers


@router.put("/offers/{offer_id}")
async def put_offer(offer_id: str, request: Request, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Create or replace an offer: ``{product_id?, category?, discount_pct, valid_from,
    valid_to, segment?, stores?, title?}`` (times in UNIX seconds; ``stores`` null = every
    store). Stores see it at their next offers-feed poll."""
    try:
        spec = parse_offer(await json_body(request, context), offer_id)
        return await asyncio.to_thread(offer_store(context).put, spec)
    except InputError as exc:
        raise refused(exc) from exc


@router.get("/offers")
def list_offers(context: Ctx, _: Allowed) -> dict[str, Any]:
    """Every offer with its status (scheduled / active / expired / withdrawn) and the stores
    it is currently sent to."""
    return {"offers": offer_store(context).list()}


@router.get("/offers/{offer_id}")
def get_offer(offer_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    rows = offer_store(context).list(offer_id)
    if not rows:
        raise bad_request(404, "unknown_offer", offer_id=offer_id)
    return rows[0]


@router.delete("/offers/{offer_id}")
async def withdraw_offer(offer_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Withdraw: every store that holds it gets a delete item (the record is kept)."""
    result = await asyncio.to_thread(offer_store(context).withdraw, offer_id)
    if result is None:
        raise bad_request(404, "unknown_offer", offer_id=offer_id)
    return result


@router.get("/stores/{store}/feed/offers", response_model=None)
def offers_feed(store: str, context: Ctx, _: Allowed, cursor: str | None = None,
                limit: int | None = None) -> Response:
    """Offers for this store after ``cursor`` (contract): upserts while an offer is live and
    targets the store, a delete once it is withdrawn, expired or no longer targets it."""
    page = offer_store(context).offers_feed(
        store, parse_cursor(cursor), feed_limit(limit, context.settings.sync))
    return page.response()


# ---------------------------------------------------------------------- segments


def _rule(doc: Mapping[str, Any]) -> Segment:
    try:
        return compile_rule(doc.get("rule"))
    except SegmentRuleError as exc:
        raise bad_request(422, **exc.detail()) from exc


def _segment_body(doc: object) -> tuple[str | None, Segment]:
    if not isinstance(doc, Mapping):
        raise bad_request(422, "bad_segment", field="body", message="expected a JSON object")
    unknown = sorted(set(doc) - {"name", "rule"})
    if unknown:
        raise bad_request(422, "bad_segment", field=unknown[0], message="unknown field")
    try:
        name = optional_text(doc, "name", "bad_segment")
    except InputError as exc:
        raise refused(exc) from exc
    return name, _rule(doc)


@router.put("/segments/{segment_id}")
async def put_segment(segment_id: str, request: Request, context: Ctx,
                      _: Allowed) -> dict[str, Any]:
    """Create or replace ``{"name"?, "rule"}`` (rule language: docs/hub.md). Offers that
    target the segment are re-targeted in every store right away."""
    try:
        check_id(segment_id, "segment_id", "bad_segment")
    except InputError as exc:
        raise refused(exc) from exc
    name, segment = _segment_body(await json_body(request, context))
    changed = await asyncio.to_thread(SegmentStore(context.db).put, segment_id, name, segment)
    feed_items = await asyncio.to_thread(offer_store(context).retarget_segment,
                                         segment_id) if changed else 0
    return {"segment_id": segment_id, "name": name, "rule": segment.rule, "changed": changed,
            "feed_items": feed_items}


@router.get("/segments")
def list_segments(context: Ctx, _: Allowed) -> dict[str, Any]:
    return {"segments": SegmentStore(context.db).get()}


@router.post("/segments/preview")
async def preview_segment(request: Request, context: Ctx, _: Allowed,
                          limit: int = 20) -> dict[str, Any]:
    """Count (and a few subjects) of an unsaved rule ``{"rule": ...}``: try before saving."""
    doc = await json_body(request, context)
    if not isinstance(doc, Mapping):
        raise bad_request(422, "bad_segment", field="body", message="expected a JSON object")
    segment = _rule(doc)
    return await asyncio.to_thread(SegmentStore(context.db).members, segment,
                                   limit=_members_limit(limit))


@router.get("/segments/{segment_id}")
def get_segment(segment_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    rows = SegmentStore(context.db).get(segment_id)
    if not rows:
        raise bad_request(404, "unknown_segment", segment_id=segment_id)
    return rows[0]


@router.delete("/segments/{segment_id}")
def delete_segment(segment_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Refused (409) while a live offer targets it: withdraw the offers first."""
    try:
        deleted = SegmentStore(context.db).delete(segment_id)
    except SegmentInUse as exc:
        raise bad_request(409, "segment_in_use", offers=str(exc).split(", ")) from exc
    if not deleted:
        raise bad_request(404, "unknown_segment", segment_id=segment_id)
    return {"segment_id": segment_id, "deleted": True}


def _members_limit(limit: int) -> int:
    if not 0 <= limit <= MAX_MEMBERS_LIST:
        raise bad_request(422, "bad_limit", max=MAX_MEMBERS_LIST)
    return limit


@router.get("/segments/{segment_id}/members")
async def segment_members(segment_id: str, context: Ctx, _: Allowed, store: str | None = None,
                          limit: int = 1000) -> dict[str, Any]:
    """``{"count", "subjects", "truncated", "evaluated_at"}`` evaluated now over the members'
    aggregates; ``?store=`` restricts to the members that store holds (what an offer for
    this segment sends there)."""
    limit = _members_limit(limit)
    segments = SegmentStore(context.db)
    with context.db.read() as conn:
        segment = load_segment(conn, segment_id)
    if segment is None:
        raise bad_request(404, "unknown_segment", segment_id=segment_id)
    result = await asyncio.to_thread(segments.members, segment, store=store, limit=limit)
    return {"segment_id": segment_id, **result}
