"""A full disk (or a failing one) on the edge: recognise it, say so once, know when it is over.

Why this matters: an event the broker handed over is acknowledged only after it is durable
in SQLite (edge.dispatch). When SQLite answers SQLITE_FULL ("database or disk is full") the
event is NOT written, so it must not be acknowledged either, and it must not become a
dead letter (that would ack it: the sale would be lost). The dispatcher keeps such QoS 1
events un-acked and retries them with a backoff; HTTP callers get 507 ``disk_full``. This
module holds the pieces without policy on *what* to retry:

* ``storage_error`` classifies an exception (also one wrapped in another's ``__cause__``);
* ``StorageHealth`` is the episode: the first refused write logs ONE warning, every refused
  write is counted (``storeside_storage_write_failures_total{what}``), the gauge
  ``storeside_storage_full`` is 1 while it lasts, and it ends (one log line giving its
  length) once a probe (a one-row write into ``meta``) and then everything that waited for
  the disk were written.
  A disk that fills up and empties again every second still logs two lines per episode,
  never one per event.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from edge.metrics import MetricSet

logger = logging.getLogger(__name__)

_SQLITE_FULL = 13
_SQLITE_IOERR = 10
_OS_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class StorageUnavailable(RuntimeError):
    """A write was refused by the disk; nothing of it was written (map to HTTP 507)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def storage_error(exc: BaseException | None) -> str | None:
    """``"disk_full"`` / ``"io_error"`` when ``exc`` (or what caused it) says the disk
    refused a write, else None (a bug, bad input: not something a retry fixes)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, StorageUnavailable):
            return exc.reason
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            primary = code & 0xFF if isinstance(code, int) else None
            if primary == _SQLITE_FULL or "database or disk is full" in str(exc):
                return "disk_full"
            if primary == _SQLITE_IOERR or "disk I/O error" in str(exc):
                return "io_error"
        if isinstance(exc, OSError) and exc.errno in _OS_FULL:
            return "disk_full"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class StorageMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.full = self.gauge(
            "storeside_storage_full",
            "1 while the disk refuses writes (disk full / I/O error): events wait un-acked",
        )
        self.failures = self.counter(
            "storeside_storage_write_failures_total",
            "Writes the disk refused, by what was written (kind, flush, tick, ...)", "what",
        )
        self.episodes = self.counter(
            "storeside_storage_episodes_total", "Times the disk started refusing writes",
            "reason",
        )


class StorageHealth:
    """The current storage episode, shared by the worker and the status page (thread-safe)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        probe: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = StorageMetrics(registry)
        self._probe = probe
        self._clock = clock
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.since: float | None = None
        self.refused = 0  # writes refused in this episode
        self.episodes = 0

    @property
    def ok(self) -> bool:
        return self.reason is None

    def failed(self, reason: str, what: str) -> None:
        """One refused write (``what``: the event kind or the job); logs only the first."""
        self.metrics.failures.labels(what).inc()
        with self._lock:
            self.refused += 1
            if self.reason is not None:
                return
            self.reason, self.since, self.episodes = reason, self._clock(), self.episodes + 1
        self.metrics.full.set(1)
        self.metrics.episodes.labels(reason).inc()
        logger.error(
            "storage %s: writes refused (first: %s); events stay un-acked and are retried, "
            "HTTP writes answer 507 until it clears", reason, what,
        )

    def recovered(self) -> None:
        """A write worked: the episode (if any) is over."""
        with self._lock:
            if self.reason is None:
                return
            reason, since, refused = self.reason, self.since, self.refused
            self.reason, self.since, self.refused = None, None, 0
        self.metrics.full.set(0)
        lasted = self._clock() - since if since is not None else 0.0
        logger.warning("storage writable again after %.1f s of %s (%d writes were refused)",
                       lasted, reason, refused)

    def probe(self) -> bool:
        """Try one small real write; True if the disk took it. The episode is not over yet:
        a page may still fit where a transaction does not (SQLite reuses the WAL's tail), so
        the caller says ``recovered`` once what was waiting has been written."""
        if self._probe is None:
            return True
        try:
            self._probe()
        except Exception as exc:
            reason = storage_error(exc)
            if reason is None:
                raise
            self.failed(reason, "probe")
            return False
        return True

    def status(self) -> dict[str, Any]:
        with self._lock:
            since = self.since
            return {
                "storage_ok": self.reason is None,
                "storage_error": self.reason,
                "storage_error_for_s": None if since is None
                else round(self._clock() - since, 1),
            }
