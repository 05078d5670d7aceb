"""``create_app``: the one way a hub process is assembled (CLI, tests, dev tools).

Nothing happens at import time: the database is opened (and migrated) in the lifespan, and
every router reaches it through ``hub.context.get_context``. Hub parts add their router to
``ROUTER_MODULES`` (each module exposes ``router``).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request

from hub.auth import authorize
from hub.context import HubContext, get_context
from hub.keys import KeyRing
from hub.metrics import HubMetrics
from hub.metrics_http import RequestMetrics
from hub.openapi_refusals import declare_refusals
from hub.retention_sweep import HubSweeper
from hub.settings import HubSettings
from hub.storage import HubDB

VERSION = "0.1.0"

ROUTER_MODULES: tuple[str, ...] = (
    "hub.api_tokens",
    "hub.api_members",
    "hub.api_sync",
    "hub.api_catalog",
    "hub.api_offers",
    "hub.api_admin",
    "hub.api_models",
    "hub.api_store_keys",
    "hub.metrics",  # GET /metrics (roles admin, viewer)
)

_ops = APIRouter(tags=["ops"])


@_ops.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@_ops.get("/readyz")
def readyz(request: Request) -> dict[str, str]:
    """Readiness: the database is open."""
    get_context(request)  # 503 while starting
    return {"status": "ready"}


def open_context(settings: HubSettings, clock: Callable[[], float] = time.time) -> HubContext:
    """Open the hub's database and key ring (also used by the CLI commands)."""
    db = HubDB(settings.db_path, clock=clock)
    keys = KeyRing(db, settings.tokens.keys_dir, settings.tokens.rotation_overlap_s)
    return HubContext(settings=settings, db=db, keys=keys, clock=clock)


def create_app(settings: HubSettings, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """Build the FastAPI app; the database opens in its lifespan, not here."""

    metrics = HubMetrics()  # one registry per app (hub.metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = await asyncio.to_thread(open_context, settings, clock)
        context.extras["metrics"] = metrics
        sweeper = None
        if settings.retention.enabled:  # hub.retention: old events, purchases, presence
            sweeper = HubSweeper(context.db, settings.retention, settings.relevance, metrics)
            # first sweep one interval after start: a restart loop must not sweep each time
            context.extras["retention"] = sweeper.start(settings.retention.sweep_interval_s)
        app.state.hub = context
        try:
            yield
        finally:
            app.state.hub = None
            if sweeper is not None:
                await asyncio.to_thread(sweeper.stop)
            await asyncio.to_thread(context.db.close)

    app = FastAPI(
        title="Storeside hub",
        version=VERSION,
        description="Central hub: members, consent, check-in tokens, store sync feeds.",
        lifespan=lifespan,
        # Every route is checked against hub.roles.ROUTES (issue 6): one table, fail closed.
        dependencies=[Depends(authorize)],
    )
    app.state.settings = settings
    app.state.hub = None
    app.state.metrics = metrics
    metrics.watch(lambda: app.state.hub)  # scrape-time gauges from the tables
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(_ops)
    for name in ROUTER_MODULES:
        app.include_router(importlib.import_module(name).router)
    declare_refusals(app)  # the spec declares the 422 reason bodies the handlers send
    return app
