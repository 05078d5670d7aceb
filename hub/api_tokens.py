"""Check-in token issuing for the app backend, and the JWKS every edge verifies them with."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from hub.auth import Allowed, limiter
from hub.context import Ctx, bad_request
from hub.keys import SigningKeyMissing
from hub.members import announce, member_consent
from hub.mqtt_credentials import app_credentials
from hub.stores import STORE_ID
from hub.tokens import SCOPES, mint_checkin_token
from models.too_many import too_many

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["tokens"])

SUBJECT = r"^m-[0-9a-f]{16}$"


class CheckinTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Annotated[str, Field(pattern=SUBJECT)]
    store: Annotated[str, Field(pattern=STORE_ID.pattern)]
    scopes: list[str] | None = None


@router.get("/jwks")
def jwks(context: Ctx) -> dict[str, object]:
    """Every check-in token key currently valid (active + those in rotation overlap)."""
    return context.keys.jwks()


@router.post("/tokens/checkin")
def issue_checkin_token(body: CheckinTokenRequest, context: Ctx,
                        caller: Allowed) -> dict[str, object]:
    """A short-lived token for one member at one store. Its scopes are the member's current
    consents, or the requested subset of them: a token never carries a purpose the member
    has not granted (asking for more is a 403, not a silent downgrade). Limited per app key
    and per member (``rate_limits``): 429 with Retry-After.

    With ``[mqtt] seed_file`` the answer also carries ``mqtt``: the app's username and
    password at that store's broker (hub.mqtt_credentials). And the member is announced at
    the store, as a geofence approach would (which the app could not publish without those
    credentials): the store's profile feed carries them at its next poll, so its broker
    knows the app seconds later even on a first visit."""
    limits = context.settings.rate_limits
    per_key = limiter(context, "checkin_tokens_app_key", limits.checkin_tokens_per_app_key_per_min,
                      limits.checkin_tokens_app_key_burst)
    per_subject = limiter(context, "checkin_tokens_subject",
                          limits.checkin_tokens_per_subject_per_min)
    wait = per_key.take(caller.key or "?") or per_subject.take(body.subject)
    if wait:
        raise too_many(wait)
    unknown = sorted(set(body.scopes or ()) - set(SCOPES))
    if unknown:
        raise bad_request(422, "unknown_scope", scopes=unknown)
    with context.db.read() as conn:
        known_store = conn.execute(
            "SELECT 1 FROM stores WHERE store_id = ?", (body.store,)
        ).fetchone()
    if not known_store:
        raise bad_request(404, "unknown_store", store=body.store)
    consent = member_consent(context.db, body.subject)
    if consent is None:
        raise bad_request(404, "unknown_member")
    granted = {p for p, on in consent.items() if on}
    if body.scopes is None:
        scopes = granted
    else:
        missing = sorted(set(body.scopes) - granted)
        if missing:
            raise bad_request(403, "consent_not_granted", scopes=missing)
        scopes = set(body.scopes)
    try:
        kid, private_pem = context.keys.active()
    except SigningKeyMissing as exc:
        logger.error("cannot issue check-in tokens: %s", exc)
        raise bad_request(503, "no_signing_key") from exc
    now = context.clock()
    ttl = context.settings.tokens.ttl_s
    token = mint_checkin_token(
        private_pem, kid=kid, subject=body.subject, chain=context.settings.chain,
        store=body.store, scopes=scopes, ttl_s=ttl, now=now,
    )
    answer: dict[str, object] = {"token": token, "expires_at": int(now) + ttl, "kid": kid,
                                 "scopes": [s for s in SCOPES if s in scopes]}
    mqtt = app_credentials(context, body.subject, body.store)
    if mqtt is not None:
        answer["mqtt"] = mqtt
    announce(context.db, body.store, body.subject, context.settings.relevance)
    return answer
