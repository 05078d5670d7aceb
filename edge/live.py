"""Live feed for staff tablets: server-sent events fed from the worker thread.

The worker thread must never wait for a slow tablet, so each listener has a bounded
asyncio queue filled with ``call_soon_threadsafe``; a listener that falls behind loses
its oldest events and is told to resync (it reloads the snapshot). The hub also keeps
the current picture (active visits and their latest suggestions) so a tablet that
connects, or reconnects after the edge restarted, starts from the present, not empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

from edge.metrics import EdgeMetrics

logger = logging.getLogger(__name__)

LISTENER_QUEUE = 256
KEEPALIVE_S = 15.0


class LiveHub:
    """Fan-out of JSON events to SSE listeners, plus the current state of the floor."""

    def __init__(self, metrics: EdgeMetrics) -> None:
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: set[asyncio.Queue[bytes]] = set()
        self._lock = threading.Lock()
        self._visits: dict[str, dict[str, Any]] = {}  # visit_id -> latest card payload
        self._seq = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the server's event loop (called at start-up, on that loop)."""
        self._loop = loop

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self._visits.values(), key=lambda v: v.get("ts", 0), reverse=True)

    def card(self, visit_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._visits.get(visit_id)

    def update_card(self, visit_id: str, card: dict[str, Any]) -> None:
        with self._lock:
            self._visits[visit_id] = card
        self._send("recommendation", card)

    def patch_card(self, visit_id: str, **fields: Any) -> None:
        """Change a few fields of a card (zone, dwell) without re-ranking."""
        with self._lock:
            card = self._visits.get(visit_id)
            if card is None:
                return
            card = {**card, **fields}
            self._visits[visit_id] = card
        self._send("visit", card)

    def remove_card(self, visit_id: str, reason: str) -> None:
        with self._lock:
            existed = self._visits.pop(visit_id, None) is not None
        if existed:
            self._send("visit_ended", {"visit_id": visit_id, "reason": reason})

    def forget_subject(self, subject: str) -> None:
        with self._lock:
            gone = [vid for vid, card in self._visits.items() if card.get("subject") == subject]
        for visit_id in gone:
            self.remove_card(visit_id, "erased")

    def _send(self, event: str, data: dict[str, Any]) -> None:
        loop = self._loop
        if loop is None or not self._listeners:
            return
        with self._lock:
            self._seq += 1
            seq = self._seq
        frame = f"id: {seq}\nevent: {event}\ndata: {json.dumps(data)}\n\n".encode()
        try:
            loop.call_soon_threadsafe(self._fan_out, frame)
        except RuntimeError:  # loop closed during shutdown
            logger.debug("live hub: loop closed, event %s dropped", event)

    def _fan_out(self, frame: bytes) -> None:
        for queue in list(self._listeners):
            if queue.full():
                _drain(queue)
                queue.put_nowait(b"event: resync\ndata: {}\n\n")
            queue.put_nowait(frame)

    async def stream(self) -> AsyncIterator[bytes]:
        """One listener: snapshot first, then live events, keep-alive comments."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(LISTENER_QUEUE)
        self._listeners.add(queue)
        self._metrics.sse_clients.set(len(self._listeners))
        try:
            yield b"retry: 2000\n\n"
            snapshot = {"visits": self.snapshot()}
            yield f"event: snapshot\ndata: {json.dumps(snapshot)}\n\n".encode()
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
        finally:
            self._listeners.discard(queue)
            self._metrics.sse_clients.set(len(self._listeners))


def _drain(queue: asyncio.Queue[bytes]) -> None:
    while not queue.empty():
        queue.get_nowait()
