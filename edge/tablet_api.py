"""The staff tablet: its page (``/tablet``), QR check-in, and (``edge.tablet_pairing``)
pairing with a one-time code.

The page is plain HTML/CSS/JS from ``edge/static`` (package data, no build step, nothing
from the internet): a store's Wi-Fi may have no internet at all. It reads the live feed
(``/v1/stream``) and posts feedback (``/v1/feedback``) with the device cookie set here.

QR check-in: the customer's app shows its check-in token (the JWT the MQTT check-in
carries) as a QR code; the tablet sends one camera frame, the edge decodes it
(``edge.qr``, in a worker thread) and runs the SAME check-in as ``POST /v1/checkin``
(``edge.api.submit``: one validation, one worker, one token verifier). The event id is
derived from the token's ``jti``, so scanning the same code twice is one check-in.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from edge import api, devices_api
from edge.api_keys import ApiKeyRegistry
from edge.devices import DeviceRegistry
from edge.messages import ID_PATTERN, JWT_PATTERN, SCHEMA_VERSION
from edge.qr import QrError, decode_qr, image_kind, load_frame
from edge.tablet_auth import device_token, registry
from edge.tablet_pairing import PAGE_HEADERS, STATIC_DIR, pair_page
from edge.tablet_pairing import router as pairing_router
from models.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

ASSETS = {"tablet.css": "text/css", "tablet.js": "text/javascript", "icon.svg": "image/svg+xml"}
MULTIPART_OVERHEAD = 16_384  # boundaries and part headers around the one frame
QR_STATUS = {"no_qr_code": 422, "not_an_image": 415, "too_large": 413}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Runs inside the app's own lifespan, i.e. after the runtime migrated the file."""
    settings = app.state.settings
    devices = DeviceRegistry(settings.db_path, ttl_s=settings.tablet.device_cache_s,
                             clock=app.state.clock)
    app.state.devices = devices
    keys = ApiKeyRegistry(settings.db_path, ttl_s=settings.auth.key_cache_s,
                          clock=app.state.clock)
    app.state.api_keys = keys
    app.state.pairing_limiter = RateLimiter(settings.tablet.pairing_attempts_per_min)
    limits = settings.rate_limits
    app.state.auth_failures = RateLimiter(limits.auth_failures_per_min)
    app.state.limiters = {
        endpoint: RateLimiter(limits.checkin_per_min, burst=limits.checkin_burst)
        for endpoint in ("checkin", "checkin_qr")
    }
    # One frame decoded at a time: two cores, and ranking must keep its share.
    app.state.qr_slot = asyncio.Semaphore(1)
    try:
        yield
    finally:
        app.state.devices = app.state.api_keys = None
        devices.close()
        keys.close()


router = APIRouter(lifespan=lifespan)
router.include_router(pairing_router)  # /tablet/pair, /v1/devices/pair
router.include_router(devices_api.router)  # /v1/devices…, /v1/pairing-codes (admin), rotate


@router.get("/tablet", tags=["tablet"], response_model=None)
def tablet_page(request: Request, pair: str | None = None) -> Response:
    """The staff page; an unpaired browser gets the pairing page (type a code). Links of
    the old form ``?pair=<device token>`` are refused: a device token is never in a link."""
    devices = registry(request)
    if pair is not None:
        return pair_page("old_pairing_link", 410)
    if devices.authenticate(device_token(request)) is None:
        return pair_page("unpaired", 401)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/tablet/assets/{name}", tags=["tablet"], include_in_schema=False)
def tablet_asset(name: str) -> FileResponse:
    """Script, style and icon: no data in them, so served to the pairing page as well."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, {"reason": "unknown_asset"})
    return FileResponse(
        STATIC_DIR / name, media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.post("/v1/checkin/qr", tags=["events"])
async def checkin_qr(request: Request) -> dict[str, Any]:
    """One camera frame (JPEG/PNG; raw body or multipart) with the app's check-in QR code.
    Answers like ``POST /v1/checkin``. Tablets only (``edge.access``), limited per address."""
    api.limit_by_address(request, "checkin_qr")
    limits = request.app.state.settings.tablet
    frame = await _read_frame(request, limits.qr_max_bytes)
    async with request.app.state.qr_slot:
        try:
            text = await asyncio.to_thread(
                _decode, frame, limits.qr_max_pixels, limits.qr_decode_budget_s
            )
        except QrError as exc:
            raise HTTPException(
                QR_STATUS.get(exc.reason, 422), {"reason": exc.reason, "detail": exc.detail}
            ) from exc
    if not re.match(JWT_PATTERN, text):
        raise HTTPException(422, {"reason": "not_a_checkin_code"})
    message = {"v": SCHEMA_VERSION, "event_id": qr_event_id(text), "ts": time.time(),
               "token": text}
    result = await api.submit(request, "checkin", json.dumps(message).encode())
    return api.checkin_answer(result)


def _decode(frame: bytes, max_pixels: int, budget_s: float) -> str:
    started = time.perf_counter()
    text = decode_qr(load_frame(frame, max_pixels), budget_s=budget_s)
    logger.debug("QR decoded in %.1f ms", (time.perf_counter() - started) * 1000)
    return text


def qr_event_id(token: str) -> str:
    """``qr-<jti>``: the same code scanned twice is the same event (idempotent). A token
    without a usable jti gets a hash of itself; the verifier refuses it anyway."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        claims = {}
    jti = claims.get("jti") if isinstance(claims, dict) else None
    event_id = f"qr-{jti}" if isinstance(jti, str) else ""
    if not re.match(ID_PATTERN, event_id):
        event_id = "qr-" + hashlib.sha256(token.encode()).hexdigest()[:40]
    return event_id


async def _read_frame(request: Request, limit: int) -> bytes:
    """The uploaded frame's bytes, refusing oversize bodies before reading them whole."""
    ceiling = limit + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > ceiling:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > ceiling:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        body = _multipart_image(content_type, body)
    if len(body) > limit:
        raise _too_large(limit)
    if not body:
        raise HTTPException(422, {"reason": "empty_body"})
    return body


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, {"reason": "too_large", "detail": f"> {limit} bytes"})


def _multipart_image(content_type: str, body: bytes) -> bytes:
    """The first part that is a JPEG/PNG (else the first part) of a multipart body."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(422, {"reason": "bad_multipart", "detail": "no boundary"})
    parts: list[bytes] = []
    current: list[bytes] = []
    parser = MultipartParser(boundary, {
        "on_part_begin": current.clear,
        "on_part_data": lambda data, start, end: current.append(data[start:end]),
        "on_part_end": lambda: parts.append(b"".join(current)),
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise HTTPException(422, {"reason": "bad_multipart", "detail": str(exc)[:200]}) from exc
    if not parts:
        raise HTTPException(422, {"reason": "bad_multipart", "detail": "no parts"})
    return next((p for p in parts if image_kind(p)), parts[0])
