"""The hub page for the central team (``/admin``) and its data endpoint.

The page itself is public static HTML/CSS/JS (``hub/static``, package data, no build step,
nothing from the internet) and holds no data: it asks for the admin token once, keeps it in
``sessionStorage`` (gone when the tab closes) and sends it as a Bearer header to
``GET /v1/admin/overview``, the only place the data comes from (admin role).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from hub.auth import Allowed
from hub.context import Ctx, bad_request
from hub.overview import overview

router = APIRouter(tags=["hub page"])

STATIC_DIR = Path(__file__).with_name("static")
ASSETS = {"admin.css": "text/css", "admin.js": "text/javascript"}
MAX_WINDOW_H = 24 * 90
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; form-action 'self'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/admin", status_code=307)


@router.get("/admin", include_in_schema=False)
def admin_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "admin.html", media_type="text/html",
                        headers=PAGE_HEADERS)


@router.get("/admin/assets/{name}", include_in_schema=False)
def admin_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404, {"reason": "unknown_asset"})
    return FileResponse(STATIC_DIR / name, media_type=media_type,
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@router.get("/v1/admin/overview")
async def admin_overview(context: Ctx, _: Allowed, window_h: float = 24.0) -> dict[str, Any]:
    """Stores (last sync, lag, model, health, KPIs over ``window_h``), model rollout,
    erasure acknowledgements, catalog counts."""
    if not 0 < window_h <= MAX_WINDOW_H:
        raise bad_request(422, "bad_window", max_hours=MAX_WINDOW_H)
    return await asyncio.to_thread(overview, context.db, chain=context.settings.chain,
                                   window_s=window_h * 3600.0)
