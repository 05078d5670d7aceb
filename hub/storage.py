"""The hub's SQLite file: one writer connection behind a lock, read connections per thread.

Same discipline as the edge store (``edge/store.py``): WAL, ``synchronous=NORMAL``, every write
one short ``BEGIN IMMEDIATE`` transaction taken under a process-wide lock (the lock is taken
at BEGIN, so a transaction never fails half-way on a lock upgrade), readers on read-only
connections of their own that WAL lets run beside the writer.

The global change sequence (``next_seq``) is what every feed uses as its cursor. It is
allocated inside the writing transaction and there is one writer, so sequence numbers become
visible in increasing order: a reader that saw ``seq = n`` committed will never later see a
row appear with a smaller one. That is what makes "give me everything after cursor C" exact.

Other hub modules build on this class (``db.write()``, ``db.read()``, ``db.next_seq``); the
domain logic lives in them, not here.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub.migrations import MIGRATIONS, Migration
from models.sqlite_schema import apply_migrations, immediate_transaction

logger = logging.getLogger(__name__)


class StorageClosedError(RuntimeError):
    """The database was closed; the hub is shutting down."""


def _connect_readonly(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA query_only = ON")
    return conn


class HubDB:
    """Owner of the hub's SQLite file: opens and migrates it, hands out transactions."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout_ms: int = 5000,
        synchronous: str = "NORMAL",
        cache_mb: int = 64,
    ) -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch {self.path} to WAL (got {mode})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # The hub's file grows to GBs; a bigger page cache keeps index pages of the hot
            # tables (events, purchases) in memory across ingestion batches.
            conn.execute(f"PRAGMA cache_size = {-int(cache_mb) * 1024}")
            # Ingestion dirties ~1000 random index pages per batch (random event ids): let the
            # WAL reach 64 MB between checkpoints so a page hit by many batches is copied
            # (and fsynced) into the database once, not once per batch.
            conn.execute("PRAGMA wal_autocheckpoint = 16384")
            # Erasure must not leave a member's rows readable in free pages.
            conn.execute("PRAGMA secure_delete = ON")
            self.schema_version = apply_migrations(conn, migrations)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close readers and the writer; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        with self._lock:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                logger.warning("PRAGMA optimize failed on close", exc_info=True)
            self._conn.close()

    def __enter__(self) -> HubDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short ``BEGIN IMMEDIATE`` transaction on the writer connection."""
        if self._closed:
            raise StorageClosedError("hub database is closed")
        with self._lock, immediate_transaction(self._conn) as conn:
            yield conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StorageClosedError("hub database is closed")
            conn = _connect_readonly(self.path, self._busy_timeout_ms)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection inside one read transaction: every query in
        the block sees the same snapshot (a feed page and the sequence it reports agree)."""
        if self._closed:
            raise StorageClosedError("hub database is closed")
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def checkpoint(self) -> bool:
        """Checkpoint and truncate the WAL (after an erasure, so deleted rows do not linger
        in it). False when a reader blocked it; the next checkpoint finishes the job."""
        if self._closed:
            raise StorageClosedError("hub database is closed")
        with self._lock:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            logger.warning("WAL checkpoint was blocked by a reader; retried later")
        return not busy

    # ------------------------------------------------------------------ change sequence

    @staticmethod
    def next_seq(conn: sqlite3.Connection, count: int = 1) -> int:
        """Allocate ``count`` consecutive sequence numbers inside a write transaction;
        returns the first. Unique per row a store's feed serves keeps paging exact."""
        if count < 1:
            raise ValueError("count must be >= 1")
        last = conn.execute(
            "UPDATE change_seq SET value = value + ? WHERE id = 1 RETURNING value", (count,)
        ).fetchone()[0]
        return int(last) - count + 1

    @staticmethod
    def current_seq(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT value FROM change_seq WHERE id = 1").fetchone()[0])

    # ------------------------------------------------------------------ store status (hub page)

    def store_statuses(self) -> list[dict[str, Any]]:
        """Every registered store with its last heartbeat (None fields if it never sent one):
        last sync time, lag (changes behind on the profile feed), model version, health."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT s.store_id, s.name, st.received_at, st.model_version, st.state, "
                "st.outbox_pending, st.feeds, st.lag_changes, st.staleness_s, st.active_visits "
                "FROM stores s LEFT JOIN store_status st USING (store_id) ORDER BY s.store_id"
            ).fetchall()
        now = self.clock()
        return [
            {
                "store": r[0], "name": r[1], "last_sync_at": r[2],
                "since_last_sync_s": None if r[2] is None else max(0.0, now - r[2]),
                "model_version": r[3], "state": r[4], "outbox_pending": r[5],
                "feeds": json.loads(r[6]) if r[6] else {}, "lag_changes": r[7],
                "staleness_s": r[8], "active_visits": r[9],
            }
            for r in rows
        ]
