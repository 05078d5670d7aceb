"""Request metrics of the hub: an ASGI middleware around the whole app (``hub.app``).

Labels by route *template* (``/v1/members/{subject}/consent``), never by path: a path holds
subjects and whatever a client typed. The template is the route the router matched (FastAPI
leaves it in ``scope["route"]``); a request no route matched is ``unmatched``. A 4xx answer's
JSON body is read (it is small: ``{"detail": {"reason": ...}}``) for its reason, so refusals
and check-in token outcomes are counted by reason without touching each handler.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hub.metrics import HubMetrics

MAX_SNIFF = 4096  # bytes of a 4xx body read for its reason


def _reason(body: bytes) -> Any:
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return None
    if isinstance(detail, dict):
        return detail.get("reason")
    return "validation" if isinstance(detail, list) else None


class RequestMetrics:
    """Counts every HTTP request once it answered (or failed: 5xx)."""

    def __init__(self, app: Any, metrics: HubMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "body": b""}

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
            elif (message["type"] == "http.response.body" and 400 <= state["status"] < 500
                  and len(state["body"]) < MAX_SNIFF):
                state["body"] += bytes(message.get("body", b""))[:MAX_SNIFF]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = getattr(scope.get("route"), "path", None)
            status = state["status"]
            reason = _reason(state["body"]) if 400 <= status < 500 else None
            self.metrics.count_answer(str(scope.get("method", "")), route, status, reason,
                                      time.perf_counter() - started)
