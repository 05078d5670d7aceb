"""``create_app``: the one way an edge process is assembled (CLI, tests, benchmark)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from edge import api, tablet_api
from edge.api_auth import authorize
from edge.live import LiveHub
from edge.metrics import EdgeMetrics
from edge.runtime import EdgeRuntime
from edge.settings import EdgeSettings

VERSION = "0.1.0"


def create_app(
    settings: EdgeSettings,
    *,
    clock: Callable[[], float] = time.time,
    connect_mqtt: bool = True,
) -> FastAPI:
    """Build the FastAPI app; the parts start in its lifespan, not here."""
    metrics = EdgeMetrics()
    live = LiveHub(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        live.bind(asyncio.get_running_loop())
        runtime = await asyncio.to_thread(
            EdgeRuntime.start, settings, metrics, live, clock=clock, connect_mqtt=connect_mqtt
        )
        app.state.runtime = runtime
        try:
            yield
        finally:
            app.state.runtime = None
            await asyncio.to_thread(runtime.stop)

    app = FastAPI(
        title="Storeside edge",
        version=VERSION,
        description="In-store personalization: visits, suggestions, feedback, live feed.",
        lifespan=lifespan,
        # Every route is checked against edge.access.ROUTES (issue 6): one table, fail closed.
        dependencies=[Depends(authorize)],
    )
    app.state.settings = settings
    app.state.clock = clock  # wall clock of this edge (tablet pairing codes expire by it)
    app.state.live = live
    app.state.metrics = metrics
    app.state.runtime = None
    app.include_router(api.router)
    app.include_router(tablet_api.router)  # staff tablet page, pairing, QR check-in
    return app
