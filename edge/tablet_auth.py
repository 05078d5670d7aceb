"""Device authentication for the staff tablet page and the API it uses.

A request carries its device token either as ``Authorization: Bearer <token>`` (scripts,
which got it from ``POST /v1/devices/pair``) or in the HttpOnly cookie set when a browser
redeemed a one-time pairing code (``edge.tablet_pairing``; ``EventSource`` cannot set
headers but sends cookies). No person ever sees the token. Which routes need a device is
``edge.access``'s table, enforced by ``edge.api_auth.authorize``. A live SSE stream is
re-checked every half second (``revocable``), so revoking a tablet also cuts the feed it
has open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import HTTPException, Request

from edge.devices import DeviceRegistry

logger = logging.getLogger(__name__)

STREAM_RECHECK_S = 0.5
AUTH_HEADERS = {"WWW-Authenticate": 'Bearer realm="storeside-tablet"'}


def registry(request: Request) -> DeviceRegistry:
    devices: DeviceRegistry | None = getattr(request.app.state, "devices", None)
    if devices is None:
        raise HTTPException(503, {"reason": "starting"})
    return devices


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def device_token(request: Request) -> str | None:
    """The token a request presents: the Bearer header wins over the cookie."""
    token = bearer_token(request)
    if token is not None:
        return token
    cookie = request.app.state.settings.tablet.cookie_name
    return request.cookies.get(cookie) or None


async def revocable(
    request: Request, frames: AsyncIterator[bytes], every_s: float = STREAM_RECHECK_S
) -> AsyncIterator[bytes]:
    """Pass ``frames`` through while the request's device stays paired; end the stream
    within ``every_s`` of a revocation (the tablet then gets 401 when it reconnects)."""
    devices, token = registry(request), device_token(request)
    iterator = aiter(frames)
    pending: asyncio.Future[Any] = asyncio.ensure_future(anext(iterator))
    loop = asyncio.get_running_loop()
    checked = loop.time()
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if loop.time() - checked >= every_s:  # also when frames keep coming
                checked = loop.time()
                if await asyncio.to_thread(devices.authenticate, token) is None:
                    logger.info("closing the live feed of a revoked tablet")
                    return
            if not done:
                continue
            try:
                frame = pending.result()
            except StopAsyncIteration:
                return
            yield frame
            pending = asyncio.ensure_future(anext(iterator))
    finally:
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await pending
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()
