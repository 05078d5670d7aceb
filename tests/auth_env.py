"""Credentials for tests (and the schemathesis runs) against a real edge or hub.

Edge (one SQLite file; the running edge sees a new token at once):

- ``edge_token(db_path, "admin")`` / ``edge_token(db_path, "till")``: an API key
  (``Authorization: Bearer ssk_…``); admin: /metrics, /v1/status, /readyz details, device
  management, /v1/pos; till: /v1/pos;
- ``edge_tablet_token(db_path)``: a paired tablet's device token (Bearer ``sst_…``, or the
  ``storeside_tablet`` cookie): /v1/visits, /v1/stream, /v1/feedback, /v1/checkin/qr,
  /v1/devices/rotate. ``tests.edge_env.EdgeEnv.tablet`` already holds one.

Hub (the hub's database, beside a serving hub):

- ``hub_token(settings, role)``: an API key of ``role`` (admin, catalog, models, privacy,
  viewer, app); ``hub.devtools`` also hands out the bootstrap admin / app tokens and the store
  keys (``store_keys``).

``bearer(token)`` → the headers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute

from edge.api_keys import create_api_key
from edge.devices import pair_device

# What authorize answers with 403 (a handler's own 403 carries another reason).
AUTH_DENIALS = {"forbidden", "unmapped_route"}


def denied(response: httpx.Response) -> bool:
    """Refused by authorize (not by the handler: a 401 pairing page is an answer)."""
    if response.status_code == 401:
        return "www-authenticate" in response.headers
    if response.status_code == 403:
        detail = response.json().get("detail", {})
        return isinstance(detail, dict) and detail.get("reason") in AUTH_DENIALS
    return False


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def edge_token(db_path: Path, role: str = "admin", label: str | None = None,
               **kwargs: Any) -> str:
    """A new edge API key of ``role`` (admin | till); its raw token."""
    return create_api_key(Path(db_path), label or f"test {role}", role, **kwargs)[1]


def edge_tablet_token(db_path: Path, label: str = "test tablet") -> str:
    """A newly paired tablet's device token."""
    return pair_device(Path(db_path), label)


def hub_token(settings: Any, role: str = "admin", label: str | None = None,
              **kwargs: Any) -> str:
    """A new hub API key of ``role`` in the database of ``settings`` (a HubSettings)."""
    from hub.api_keys import create_api_key as create_hub_key
    from hub.app import open_context

    context = open_context(settings)
    try:
        return create_hub_key(context.db, role, label or f"test {role}", **kwargs)[1]
    finally:
        context.db.close()


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every API route the app serves, included routers too
    (FastAPI >= 0.160 nests them: ``app.routes`` alone no longer lists them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are flat in app.routes
        pairs = [(r, r.path) for r in app.routes if isinstance(r, APIRoute)]
    else:
        pairs = [(c.original_route, c.path or "") for c in iter_route_contexts(app.routes)
                 if isinstance(c.original_route, APIRoute)]
    return sorted((m, path) for route, path in pairs for m in route.methods)  # type: ignore[attr-defined]
