"""Presented token → its row in the edge's SQLite, cached briefly: the per-request check of
tablet device tokens (``edge.devices``) and admin / till API keys (``edge.api_keys``).

Only sha256 hashes of tokens are stored, so a look-up hashes the token and runs one indexed
point query. Hits are cached for ``ttl_s`` (0.5 s): a revocation or expiry written by
another process (the CLI) is effective within that time, one by this process at once
(``forget``). Misses are not cached (a token made by the CLI a moment ago must work at
once). ``last_used`` is written at most once per ``touch_every_s`` per id, on its own short
connection outside the lock: a tablet polling every second must not become a stream of
write transactions competing with the event worker, and waiting for the write lock must not
hold up other callers' checks.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from models.sqlite_schema import immediate_transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")
BUSY_TIMEOUT_S = 5.0
MAX_TOKEN_CHARS = 256


def hash_token(token: str) -> str:
    """What is stored and looked up: sha256 hex of the raw token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    fresh_until: float  # monotonic


class TokenLookup(Generic[T]):
    """``get(token)`` → the row ``query`` finds for its hash (named parameters ``:hash`` and
    ``:now``, the wall clock), made into a ``T`` by ``make``; None when there is none."""

    def __init__(
        self,
        db_path: Path,
        query: str,
        make: Callable[[tuple[Any, ...]], T],
        *,
        ident: Callable[[T], str],
        last_used: Callable[[T], float | None],
        touch_sql: str,
        ttl_s: float = 0.5,
        touch_every_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = Path(db_path)
        self.ttl_s = ttl_s
        self.touch_every_s = touch_every_s
        self._query, self._make, self._ident, self._last_used = query, make, ident, last_used
        self._touch_sql = touch_sql  # parameters: (wall time, id)
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry[T]] = {}
        self._touched: dict[str, float] = {}
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        # Opened on first use, after the runtime migrated the file; shared under the lock
        # (each use is one indexed point query).
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.db_path, isolation_level=None, timeout=BUSY_TIMEOUT_S,
                check_same_thread=False,
            )
        return self._conn

    def get(self, token: str | None) -> T | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        key = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit.fresh_until > now:
                return hit.value
            wall = self._clock()
            row = self._db().execute(self._query, {"hash": key, "now": wall}).fetchone()
            if row is None:
                self._cache.pop(key, None)
                return None
            value = self._make(row)
            self._cache[key] = _Entry(value, now + self.ttl_s)
            ident = self._ident(value)
            touched = self._touched.get(ident, self._last_used(value) or 0.0)
            touch = wall - touched >= self.touch_every_s
            if touch:
                self._touched[ident] = wall
        if touch:
            self._touch(ident, wall)
        return value

    def _touch(self, ident: str, wall: float) -> None:
        try:
            conn = sqlite3.connect(self.db_path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            try:
                with immediate_transaction(conn):
                    conn.execute(self._touch_sql, (wall, ident))
            finally:
                conn.close()
        except sqlite3.Error:  # best effort: a busy file must not refuse a valid caller
            logger.warning("could not record the last use of %s", ident, exc_info=True)

    def forget(self, idents: set[str]) -> None:
        """Drop cached rows of these ids (revoked by this process: effective at once)."""
        with self._lock:
            for key in [k for k, e in self._cache.items() if self._ident(e.value) in idents]:
                del self._cache[key]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._cache.clear()
