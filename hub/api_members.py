"""Members: CRM import (admin), consent (app backend / admin), data subject requests (admin)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hub.auth import Allowed
from hub.context import Ctx, bad_request
from hub.dsr import erase_member, erasure_status, export_member
from hub.members import consent_history, import_members, member_consent, set_consent
from hub.members_csv import parse_members_csv
from models.identity import SUBJECT_PATTERN

router = APIRouter(prefix="/v1", tags=["members"])

MAX_CSV_BYTES = 64 * 1024 * 1024


class ConsentChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consent: dict[Literal["personalize", "staff_display", "app_offers"], bool] = Field(
        min_length=1
    )
    channel: Literal["app", "store"] = "app"  # ignored for an admin: always hub_admin


def _subject(subject: str) -> str:
    if not SUBJECT_PATTERN.match(subject):
        raise bad_request(422, "bad_subject")
    return subject


@router.post("/members/import")
async def import_csv(request: Request, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Body: the CRM's CSV export (text/csv, UTF-8). Upserts; bad rows come back with their
    line numbers and reasons, the good ones are imported."""
    raw = await request.body()
    if len(raw) > MAX_CSV_BYTES:
        raise bad_request(413, "too_large", max=MAX_CSV_BYTES)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad_request(422, "bad_encoding", detail="CSV must be UTF-8") from exc
    parsed = parse_members_csv(text)
    report = await asyncio.to_thread(import_members, context.db, parsed.records,
                                     context.settings.salt, context.settings.relevance)
    result = report.as_dict()
    result["errors"] = sorted(parsed.errors + result["errors"], key=lambda e: e["line"])
    return result


@router.get("/members/{subject}/consent")
def get_consent(subject: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    consent = member_consent(context.db, _subject(subject))
    if consent is None:
        raise bad_request(404, "unknown_member")
    with context.db.read() as conn:
        history = consent_history(conn, subject)
    return {"subject": subject, "consent": consent, "history": history}


@router.put("/members/{subject}/consent")
def put_consent(subject: str, body: ConsentChange, context: Ctx,
                caller: Allowed) -> dict[str, Any]:
    """Grant / revoke purposes. Revoking ``personalize`` turns the member into a
    ``delete / consent_revoked`` item in every store feed that carried it."""
    channel = body.channel if caller.role == "app" else "hub_admin"
    wanted = {str(purpose): granted for purpose, granted in body.consent.items()}
    consent = set_consent(context.db, _subject(subject), wanted, channel,
                          context.settings.relevance)
    if consent is None:
        raise bad_request(404, "unknown_member")
    return {"subject": subject, "consent": consent}


@router.get("/members/{subject}/export")
def export(subject: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Data subject access: everything the hub holds on the member, as JSON."""
    data = export_member(context.db, _subject(subject))
    if data is None:
        raise bad_request(404, "unknown_member")
    return data


@router.delete("/members/{subject}")
def erase(subject: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Erasure: personal data and events deleted here, an erasure item for every store."""
    record, created = erase_member(context.db, _subject(subject))
    return {**record, "created": created}


@router.get("/erasures/{erasure_id}")
def erasure(erasure_id: str, context: Ctx, _: Allowed) -> dict[str, Any]:
    """Which stores acknowledged the erasure, and when; which are still pending."""
    status = erasure_status(context.db, erasure_id)
    if status is None:
        raise bad_request(404, "unknown_erasure")
    return status
