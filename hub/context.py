"""What every hub request handler needs, built once per process in ``create_app``'s lifespan.

Routers take it with ``Depends(get_context)`` instead of importing globals, so a test can run
two hubs in one process and nothing opens a connection at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from hub.keys import KeyRing
from hub.settings import HubSettings
from hub.storage import HubDB


@dataclass
class HubContext:
    settings: HubSettings
    db: HubDB
    keys: KeyRing
    clock: Callable[[], float]
    # Other hub parts may hang their own long-lived objects here (by name).
    extras: dict[str, Any] = field(default_factory=dict)


def get_context(request: Request) -> HubContext:
    context: HubContext | None = getattr(request.app.state, "hub", None)
    if context is None:
        raise HTTPException(503, {"reason": "starting"})
    return context


Ctx = Annotated[HubContext, Depends(get_context)]


def bad_request(status: int, reason: str, **detail: Any) -> HTTPException:
    """The one shape of a refusal: ``{"detail": {"reason": ..., ...}}``."""
    return HTTPException(status, {"reason": reason, **detail})
