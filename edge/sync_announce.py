"""Geofence approaches waiting to be announced to the hub.

The event worker hands a subject over and returns at once (it must never wait for the WAN);
the pull thread sends them. Bounded (a flood of approaches while the hub is away drops the
excess, counted) and deduplicated: a member walking in and out of the geofence is announced
once per ``again_after_s``, since the hub keeps an announce relevant for a day anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import Counter


class AnnounceQueue:
    def __init__(self, max_size: int, counter: Counter, clock: Callable[[], float],
                 again_after_s: float = 600.0) -> None:
        self.max_size = max_size
        self.again_after_s = again_after_s
        self._counter = counter
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, None] = {}  # in arrival order
        self._sent_at: dict[str, float] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def offer(self, subject: str) -> bool:
        """Queue ``subject``; False if it is queued or was sent recently, or no room."""
        now = self._clock()
        with self._lock:
            last = self._sent_at.get(subject)
            if subject in self._pending or (last is not None and now - last < self.again_after_s):
                return False
            if len(self._pending) >= self.max_size:
                self._counter.labels("dropped").inc()
                return False
            self._pending[subject] = None
            return True

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def done(self, subject: str, result: str) -> None:
        """The hub answered for ``subject`` (``sent`` or ``refused``)."""
        now = self._clock()
        with self._lock:
            self._pending.pop(subject, None)
            self._sent_at[subject] = now
            if len(self._sent_at) > 10 * self.max_size:
                horizon = now - self.again_after_s
                self._sent_at = {s: t for s, t in self._sent_at.items() if t > horizon}
        self._counter.labels(result).inc()
