"""Pairing a tablet with a one-time code: the browser link, the typed code, the API.

``storeside-edge pair-tablet`` prints a code (``K7QM-4XPD``) and its link
(``/tablet/pair?code=…``). Redeeming it creates the device with a new random token
(``DeviceRegistry.redeem``, one transaction) that goes straight into the tablet's HttpOnly
cookie (browser: ``GET /tablet/pair``, also what the pairing page's form sends) or into the
answer of ``POST /v1/devices/pair`` (scripts, kiosk apps): the token is never on a screen
or in a link. Every attempt first takes a token from a per-address bucket
(``models.ratelimit``), so ~40-bit codes that live minutes cannot be guessed; outcomes are
counted in ``storeside_pairing_attempts_total``.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from edge.api_auth import client_address
from edge.devices import Device, PairingRefused
from edge.tablet_auth import registry
from models.too_many import too_many

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # Everything is same-origin; nothing may be loaded from elsewhere.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
        "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
REFUSED_STATUS = {"malformed_code": 422, "unknown_code": 401, "code_used": 410,
                  "code_expired": 410}
MESSAGES = {
    "unpaired": "This tablet is not paired with the store yet.",
    "malformed_code": "That is not a pairing code: it has 8 letters and digits, like "
                      "K7QM-4XPD, and never 0, 1, I, L or O.",
    "unknown_code": "This pairing code is not valid. Check it, or ask for a new one.",
    "code_used": "This pairing code was already used. Ask for a new one.",
    "code_expired": "This pairing code has expired. Ask for a new one.",
    "too_many_attempts": "Too many attempts. Wait a minute, then try again.",
    "old_pairing_link": "This kind of pairing link is no longer accepted. Ask for a pairing "
                        "code (storeside-edge pair-tablet).",
    "busy": "The store server is busy. Try again in a moment.",
}
MAX_BODY = 4096

router = APIRouter()


def pair_page(reason: str, status: int, *, code: str = "",
              headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """The pairing page (form to type a code) with why it is shown."""
    text = (STATIC_DIR / "pair.html").read_text(encoding="utf-8")
    body = (text.replace("{{message}}", html.escape(MESSAGES.get(reason, "")))
            .replace("{{reason}}", html.escape(reason))
            .replace("{{code}}", html.escape(code[:16])))
    return HTMLResponse(body, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def redeem(request: Request, code: str, label: str | None = None) -> tuple[Device, str]:
    """Rate limit by client address, then redeem; refusals as HTTPException with a reason.
    Blocking (SQLite): run it in a worker thread."""
    metrics = request.app.state.metrics.pairing_attempts
    address = client_address(request)
    wait = request.app.state.pairing_limiter.take(address)
    if wait:
        metrics.labels("rate_limited").inc()
        logger.warning("pairing attempts from %s over the limit", address)
        raise too_many(wait, "too_many_attempts")
    try:
        device, token = registry(request).redeem(code, label)
    except PairingRefused as exc:
        metrics.labels(exc.reason).inc()
        logger.info("pairing code refused (%s) from %s", exc.reason, address)
        raise HTTPException(REFUSED_STATUS[exc.reason], {"reason": exc.reason}) from exc
    except ValueError as exc:
        metrics.labels("bad_label").inc()
        raise HTTPException(422, {"reason": "bad_label", "detail": str(exc)}) from exc
    except sqlite3.Error as exc:  # the write lock stayed taken past the busy timeout
        logger.warning("pairing failed on the database: %s", exc)
        raise HTTPException(503, {"reason": "busy"}) from exc
    metrics.labels("paired").inc()
    return device, token


def set_device_cookie(request: Request, response: Response, token: str) -> None:
    settings = request.app.state.settings.tablet
    response.set_cookie(
        settings.cookie_name, token, max_age=settings.cookie_max_age_s, path="/",
        httponly=True, samesite="strict", secure=request.url.scheme == "https",
    )


@router.get("/tablet/pair", tags=["tablet"], response_model=None)
def pair_in_browser(request: Request, code: str | None = None) -> HTMLResponse | RedirectResponse:
    """Open the link ``pair-tablet`` printed (or send the pairing page's form): the code is
    used up, a new device token goes into an HttpOnly SameSite=Strict cookie, and the
    browser is sent on to ``/tablet``. Without a code: the pairing page."""
    if code is None:
        return pair_page("", 200)
    try:
        device, token = redeem(request, code)
    except HTTPException as exc:
        why = exc.detail.get("reason", "") if isinstance(exc.detail, dict) else ""
        return pair_page(why, exc.status_code, code=code, headers=exc.headers)
    logger.info("tablet %s paired in a browser", device.device_id)
    response = RedirectResponse("/tablet", status_code=303, headers=PAGE_HEADERS)
    set_device_cookie(request, response, token)
    return response


@router.post("/v1/devices/pair", tags=["tablet"], status_code=201)
async def pair_by_api(request: Request) -> dict[str, str]:
    """``{"code": "K7QM-4XPD", "label"?: "Kiosk 2"}`` → ``{"device_id", "label", "token"}``
    for clients without a browser; send the token as ``Authorization: Bearer``."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, {"reason": "too_large", "detail": f"> {MAX_BODY} bytes"})
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise HTTPException(422, {"reason": "bad_json"}) from exc
    if not isinstance(data, dict) or set(data) - {"code", "label"}:
        data = {}
    code, label = data.get("code"), data.get("label")
    if not isinstance(code, str) or not (label is None or isinstance(label, str)):
        raise HTTPException(422, {"reason": "bad_request",
                                  "detail": 'expected {"code": str, "label"?: str}'})
    device, token = await asyncio.to_thread(redeem, request, code, label)
    return {"device_id": device.device_id, "label": device.label, "token": token}
