"""Device management over HTTP (admin token) and token rotation by the tablet itself.

The CLI (``edge.devices_cli``) does the same on the store device; these routes let a
central tool or a support engineer do it remotely with an admin token (``edge.access``):

- ``GET /v1/devices``: paired tablets (revoked too) and how many pairing codes are pending;
- ``POST /v1/devices/{device_id}/revoke``: effective at once in this process;
- ``POST /v1/pairing-codes``: a one-time code for a new tablet (the token is never shown);
- ``POST /v1/devices/rotate`` (the tablet's own token): a new device token; the old one
  keeps working for ``auth.device_rotation_grace_s``, then is refused. A browser gets the
  new token in its HttpOnly cookie only (never in the body, which page script can read), a
  script (Bearer) in the body.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from edge.api_auth import bearer_token
from edge.devices import (
    Device,
    NotCurrentToken,
    create_pairing_code,
    list_devices,
    pending_pairing_codes,
)
from edge.tablet_auth import device_token, registry
from edge.tablet_pairing import MAX_BODY, set_device_cookie

logger = logging.getLogger(__name__)

router = APIRouter(tags=["devices"])


def _device(d: Device) -> dict[str, Any]:
    return {"device_id": d.device_id, "label": d.label, "created_at": d.created_at,
            "last_seen_at": d.last_seen_at, "revoked_at": d.revoked_at,
            "state": "active" if d.active else "revoked"}


@router.get("/v1/devices")
def devices(request: Request) -> dict[str, Any]:
    """Paired tablets, oldest first, and the number of pairing codes still pending."""
    db = request.app.state.settings.db_path
    now = request.app.state.clock()
    return {"devices": [_device(d) for d in list_devices(db)],
            "pending_pairing_codes": len(pending_pairing_codes(db, now=now))}


@router.post("/v1/devices/{device_id}/revoke")
def revoke(device_id: str, request: Request) -> dict[str, Any]:
    """Revoke one tablet by id; its requests and live feed stop at once."""
    if not device_id.startswith("tab-") or len(device_id) > 32:
        raise HTTPException(404, {"reason": "unknown_device"})
    revoked = registry(request).revoke(device_id)
    if not revoked:
        raise HTTPException(404, {"reason": "unknown_device"})
    logger.info("tablet %s revoked over HTTP", device_id)
    return {"revoked": [_device(d) for d in revoked]}


@router.post("/v1/pairing-codes", status_code=201)
async def pairing_code(request: Request) -> dict[str, Any]:
    """``{"label": "Tablet 3", "ttl_s"?: 600}`` → a one-time pairing code (``K7QM4XPD``)."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, {"reason": "too_large"})
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise HTTPException(422, {"reason": "bad_json"}) from exc
    settings = request.app.state.settings.tablet
    if not isinstance(data, dict) or set(data) - {"label", "ttl_s"}:
        data = {"label": None}
    label, ttl = data.get("label"), data.get("ttl_s", settings.pairing_ttl_s)
    if (not isinstance(label, str) or isinstance(ttl, bool)
            or not isinstance(ttl, int | float) or not 30 <= ttl <= 7 * 86_400):
        raise HTTPException(422, {"reason": "bad_request",
                                  "detail": 'expected {"label": str, "ttl_s"?: 30..604800}'})
    db, now = request.app.state.settings.db_path, request.app.state.clock()
    try:
        code = await asyncio.to_thread(create_pairing_code, db, label, float(ttl), now=now)
    except ValueError as exc:
        raise HTTPException(422, {"reason": "bad_label", "detail": str(exc)}) from exc
    return {"code": code, "label": label.strip(), "expires_at": now + ttl}


@router.post("/v1/devices/rotate", response_model=None)
def rotate(request: Request) -> dict[str, Any] | JSONResponse:
    """A new token for the calling tablet (see the module doc)."""
    token = device_token(request)
    assert token is not None  # authorize let a device through
    grace = request.app.state.settings.auth.device_rotation_grace_s
    try:
        device, new = registry(request).rotate(token, grace)
    except NotCurrentToken as exc:
        raise HTTPException(409, {"reason": "not_current_token"}) from exc
    answer: dict[str, Any] = {"device_id": device.device_id, "old_token_valid_s": grace}
    if bearer_token(request) is not None:
        return {**answer, "token": new}
    response = JSONResponse(answer)
    set_device_cookie(request, response, new)
    return response
