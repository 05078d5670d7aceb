"""HTTP API of the edge: health, metrics, visits, feedback, kiosk check-in, live stream.

Who may call what is one table (``edge.access``), enforced for the whole app by
``edge.api_auth.authorize``; handlers here only add the per-address check-in limit.

Writes go through the dispatcher (``dispatcher.call``) so the HTTP path and the MQTT path
share one validation (``edge.messages.parse_inbound``), one writer thread and one set of
handlers: a kiosk check-in is the same event as an app check-in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from edge.api_auth import limits_exempt, sees_details
from edge.dispatch import QueueFull
from edge.messages import DeadLetter, parse_inbound
from edge.runtime import EdgeRuntime
from edge.service import CheckinRefused
from edge.storage_faults import StorageUnavailable
from edge.tablet_auth import revocable
from models.too_many import too_many

logger = logging.getLogger(__name__)

router = APIRouter()

DEAD_LETTER_STATUS = {"too_large": 413}
CALL_TIMEOUT_S = 5.0


def _runtime(request: Request) -> EdgeRuntime:
    runtime: EdgeRuntime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise HTTPException(503, "edge is starting")
    return runtime


async def submit(request: Request, kind: str, body: bytes | None = None) -> Any:
    """Validate the body (default: the request's) exactly like an MQTT payload, then run
    the handler on the worker. The QR check-in (edge.tablet_api) comes through here too."""
    runtime = _runtime(request)
    if body is None:
        body = await request.body()
    runtime.metrics.messages_received.labels(kind).inc()
    try:
        message = parse_inbound(kind, body, max_bytes=runtime.settings.mqtt.max_payload_bytes)
    except DeadLetter as exc:
        runtime.metrics.dead_letters.labels(kind, exc.reason).inc()
        raise HTTPException(
            DEAD_LETTER_STATUS.get(exc.reason, 422), {"reason": exc.reason, "detail": exc.detail}
        ) from exc
    try:
        return await asyncio.to_thread(runtime.dispatcher.call, kind, message, CALL_TIMEOUT_S)
    except CheckinRefused as exc:
        raise HTTPException(401, {"reason": f"token_{exc.reason}"}) from exc
    except DeadLetter as exc:  # refused by the handler (e.g. a member over its check-in limit)
        runtime.metrics.dead_letters.labels(kind, exc.reason).inc()
        if exc.reason == "rate_limited":
            raise too_many(60.0 / runtime.settings.rate_limits.subject_checkins_per_min) from exc
        raise HTTPException(422, {"reason": exc.reason, "detail": exc.detail}) from exc
    except (TimeoutError, QueueFull) as exc:
        raise HTTPException(503, {"reason": "busy"}) from exc
    except StorageUnavailable as exc:  # nothing was written: the caller must send it again
        raise HTTPException(507, {"reason": exc.reason}) from exc


@router.get("/healthz", tags=["ops"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
def readyz(request: Request, response: Response) -> dict[str, Any]:
    """Readiness: connected to the broker, the worker running and the disk taking writes
    (a degraded model is still ready: the store serves popular lists; a full disk is not:
    sales wait un-acked, ``storage_error`` says why). Anyone gets ``{"ready": bool}``; the
    details only the device itself (``auth.open_on_loopback``) or an admin token."""
    status = _runtime(request).status()
    ready = status["mqtt_connected"] and status["worker_alive"] and status.get("storage_ok", True)
    response.status_code = 200 if ready else 503
    return {"ready": ready, **status} if sees_details(request) else {"ready": ready}


@router.get("/metrics", tags=["ops"])
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(_runtime(request).metrics.render(), media_type="text/plain; version=0.0.4")


@router.get("/v1/status", tags=["ops"])
def status(request: Request) -> dict[str, Any]:
    """Model version, degradation, queue and outbox: what an operator checks first."""
    return _runtime(request).status()


@router.get("/v1/visits", tags=["visits"])
def visits(request: Request) -> dict[str, Any]:
    """Customers in the store now, newest first, with their latest suggestions."""
    _runtime(request)
    return {"visits": request.app.state.live.snapshot()}


@router.get("/v1/visits/{visit_id}/recommendations", tags=["visits"])
def visit_recommendations(visit_id: str, request: Request) -> dict[str, Any]:
    """The latest staff card of one visit (404 once the visit ended)."""
    _runtime(request)
    card: dict[str, Any] | None = request.app.state.live.card(visit_id)
    if card is None:
        raise HTTPException(404, {"reason": "unknown_visit"})
    return card


@router.post("/v1/checkin", tags=["events"], status_code=200)
async def checkin(request: Request) -> dict[str, Any]:
    """Kiosk check-in: body as the MQTT check-in payload. Answers with the staff card.
    Open (the signed token is the credential) but limited per client address."""
    limit_by_address(request, "checkin")
    return checkin_answer(await submit(request, "checkin"))


def limit_by_address(request: Request, endpoint: str) -> None:
    """429 when the caller's address is over ``rate_limits.checkin_per_min`` for
    ``endpoint`` (its own bucket: ``app.state.limiters[endpoint]``)."""
    if limits_exempt(request):
        return
    address = request.client.host if request.client else "unknown"
    wait = request.app.state.limiters[endpoint].take(address)
    if wait:
        request.app.state.metrics.rate_limited.labels(endpoint).inc()
        raise too_many(wait)


def checkin_answer(result: Any) -> dict[str, Any]:
    """The answer to a check-in, kiosk or QR (edge.tablet_api)."""
    return {"visit_id": result.visit_id, "duplicate": result.duplicate, "card": result.card}


@router.post("/v1/feedback", tags=["events"], status_code=202)
async def feedback(request: Request) -> dict[str, Any]:
    """Staff tap or app action: accepted / dismissed / bought / redeemed."""
    applied = await submit(request, "feedback")
    return {"accepted": True, "duplicate": not applied}


@router.post("/v1/pos", tags=["events"], status_code=202)
async def pos(request: Request) -> dict[str, Any]:
    """POS basket (for tills that speak HTTP rather than MQTT)."""
    applied = await submit(request, "pos")
    return {"accepted": True, "duplicate": not applied}


@router.get("/v1/stream", tags=["visits"])
def stream(request: Request) -> StreamingResponse:
    """Server-sent events for tablets: a snapshot, then every card change."""
    _runtime(request)
    return StreamingResponse(
        revocable(request, request.app.state.live.stream()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
