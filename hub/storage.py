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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub.migrations import MIGRATIONS, Migration
from models.sqlite_db import SQLiteDB, connect_readonly

logger = logging.getLogger(__name__)


class StorageClosedError(RuntimeError):
    """The database was closed; the hub is shutting down."""


class HubDB(SQLiteDB[sqlite3.Connection]):
    """Owner of the hub's SQLite file: opens and migrates it, hands out transactions.

    The writer, its lock, the per-thread read connections, ``write()``, ``checkpoint()`` and
    ``close()`` are the shared ``models.sqlite_db.SQLiteDB``; the hub adds its pragmas,
    snapshot reads and the change sequence."""

    closed_error = StorageClosedError
    closed_message = "hub database is closed"

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
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        pragmas = (
            "foreign_keys = ON",
            # The hub's file grows to GBs; a bigger page cache keeps index pages of the hot
            # tables (events, purchases) in memory across ingestion batches.
            f"cache_size = {-int(cache_mb) * 1024}",
            # Ingestion dirties ~1000 random index pages per batch (random event ids): let the
            # WAL reach 64 MB between checkpoints so a page hit by many batches is copied
            # (and fsynced) into the database once, not once per batch.
            "wal_autocheckpoint = 16384",
        )
        super().__init__(
            path, migrations, busy_timeout_ms=busy_timeout_ms, synchronous=synchronous,
            pragmas=pragmas,
        )

    def _open_reader(self) -> sqlite3.Connection:
        return connect_readonly(self.path, self._busy_timeout_ms)

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection inside one read transaction: every query in
        the block sees the same snapshot (a feed page and the sequence it reports agree)."""
        self._check_open()
        conn = self.reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

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
