"""A token bucket per key (a client address, a member, an API key), in memory. No I/O.

Used where a guess or a request is cheap to send but must stay rare: redeeming a tablet
pairing code, kiosk check-ins per address, check-ins per member, check-in tokens per member
and per app key, bad bearer tokens per address (edge and hub share this one class).

A bucket holds ``burst`` attempts and refills at ``per_minute``; an attempt with no token
left is refused with the time until the next one (for ``Retry-After``). Memory is bounded:
past ``max_keys`` keys, buckets that have refilled completely (they hold no information)
are dropped first, then the fullest: a key that spent its attempts keeps its bucket however
many other keys show up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``take(key)`` → 0.0 when allowed, else the seconds to wait. Thread-safe."""

    def __init__(
        self,
        per_minute: float,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.rate_per_s = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(per_minute)))
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _level(self, bucket: _Bucket, now: float) -> float:
        return min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)

    def take(self, key: str) -> float:
        """Spend one attempt of ``key``; returns 0.0, or how long until one is available."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                self._make_room(now)
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens, bucket.at = self._level(bucket, now), now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate_per_s

    def wait(self, key: str) -> float:
        """How long until ``key`` may spend an attempt (0.0: now), without spending one.
        For limits counted on failures only: check first, ``take`` when an attempt failed."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            level = self._level(bucket, now)
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate_per_s

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_keys:
            return
        for key in [k for k, b in self._buckets.items() if self._level(b, now) >= self.burst]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:  # the fullest bucket knows least
            fullest = max(self._buckets.items(), key=lambda kv: self._level(kv[1], now))
            del self._buckets[fullest[0]]

    def __len__(self) -> int:
        return len(self._buckets)
