"""The edge's SQLite store: loyalty profiles, purchases, catalog, visits, impressions, outbox.

One file, WAL mode, ONE writer connection. The service routes every write through its single
event worker thread; a lock around each write transaction additionally keeps a stray write
from another thread (outbox shipper, erasure request) correct instead of corrupting state.
Readers (HTTP threads, the worker's own look-ups) each get a read-only connection of their
own (``reader()``), which WAL lets run beside the writer without blocking.

Every write is one short ``BEGIN IMMEDIATE`` transaction: the write lock is taken at BEGIN,
so a transaction never fails half-way with SQLITE_BUSY on upgrade, and an event's effect, its
``processed_events`` mark and its outbox row commit together or not at all. That is what makes
handling idempotent across restarts: a redelivered event finds its mark and changes nothing.

Durability: with ``journal_mode=WAL`` and ``synchronous=NORMAL`` a COMMIT has written the
transaction into the WAL file (the OS page cache) before it returns; only checkpoints fsync.
A killed process (kill -9, OOM, crash) therefore loses nothing the service has acknowledged
after the commit; an OS crash or power cut can lose the last transactions (never corrupt the
file). Devices that must survive power loss pass ``synchronous="FULL"`` (an fsync per commit).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from edge.migrations import MIGRATIONS
from edge.store_events import INSERT_PURCHASE, EventWrites
from edge.store_reader import EdgeReader
from edge.store_rows import (
    Aggregates,
    CapCounts,
    CatalogItem,
    Impression,
    Offer,
    OutboxEvent,
    Profile,
    StoreInputError,
    VisitRecord,
    check_catalog_item,
    check_profile,
    dump_json,
    require_number,
    require_text,
)
from edge.store_sync import CATALOG_UPSERT, OFFER_UPSERT, SyncWrites
from edge.store_visits import VisitStateWrites
from models.offer_terms import NO_TARGET, lacks_target
from models.sqlite_db import SQLiteDB
from models.transactions import Transaction

__all__ = [
    "MEMBER_TABLES", "Aggregates", "CapCounts", "CatalogItem", "EdgeReader", "EdgeStore",
    "Impression", "Offer", "OutboxEvent", "Profile", "StoreClosedError", "StoreInputError",
    "VisitRecord", "delete_member_rows",
]

logger = logging.getLogger(__name__)

# Every table whose ``subject`` rows are about one member: what an erasure deletes, and what
# the retention sweep (edge.retention_sweep) deletes of a member not seen for a while. One
# list for both, so a new member table cannot be erased but kept (or the reverse). The
# outbox only on erasure: retention never drops an event the hub has not acknowledged.
MEMBER_TABLES = ("profiles", "purchases", "aggregates", "impressions", "feedback", "visits",
                 "offer_subjects")
_ERASE_TABLES = (*MEMBER_TABLES, "outbox")


def delete_member_rows(
    conn: sqlite3.Connection, subjects: Sequence[str], tables: Sequence[str] = MEMBER_TABLES
) -> dict[str, int]:
    """Delete the rows of ``subjects`` from ``tables`` in the caller's write transaction;
    returns the rows deleted per table (each table has a ``subject`` index)."""
    params = [(s,) for s in subjects]
    return {table: conn.executemany(f"DELETE FROM {table} WHERE subject = ?", params).rowcount
            for table in tables}


class StoreClosedError(RuntimeError):
    """The store was closed; the service is shutting down."""


class EdgeStore(SQLiteDB[EdgeReader], EventWrites, SyncWrites, VisitStateWrites):
    """Owner of the SQLite file: opens it, migrates it, and performs every write."""

    closed_error = StoreClosedError
    closed_message = "store is closed"

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        synchronous: str = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        super().__init__(
            path, MIGRATIONS, busy_timeout_ms=busy_timeout_ms, synchronous=synchronous
        )

    def _open_reader(self) -> EdgeReader:
        return EdgeReader(self.path, self._busy_timeout_ms)

    # The event and sync mixins write through ``_write()``; every write is the base's
    # ``BEGIN IMMEDIATE`` transaction under the writer lock.
    _write = SQLiteDB.write

    # ------------------------------------------------------------------ reads (per thread)

    def is_processed(self, event_id: str) -> bool:
        return self.reader().is_processed(event_id)

    def get_profile(self, subject: str) -> Profile | None:
        return self.reader().get_profile(subject)

    def get_aggregates(self, subject: str) -> Aggregates | None:
        return self.reader().get_aggregates(subject)

    def purchase_history(self, subject: str, max_baskets: int = 50) -> list[Transaction]:
        return self.reader().purchase_history(subject, max_baskets)

    def all_purchases(self, since_ts: float | None = None) -> list[Transaction]:
        return self.reader().all_purchases(since_ts)

    def catalog(self) -> list[CatalogItem]:
        return self.reader().catalog()

    def catalog_version(self) -> int:
        return self.reader().catalog_version()

    def active_offers(self, now: float) -> list[Offer]:
        return self.reader().active_offers(now)

    def cap_counts(self, subject: str, visit_id: str, day_start_ts: float) -> CapCounts:
        return self.reader().cap_counts(subject, visit_id, day_start_ts)

    def visit(self, visit_id: str) -> VisitRecord | None:
        return self.reader().visit(visit_id)

    def visit_impressions(self, visit_id: str) -> list[Impression]:
        return self.reader().visit_impressions(visit_id)

    def live_tokens(self, now: float) -> list[tuple[str, float]]:
        return self.reader().live_tokens(now)

    def outbox_pending(self, limit: int = 500) -> list[OutboxEvent]:
        return self.reader().outbox_pending(limit)

    def outbox_count(self) -> int:
        return self.reader().outbox_count()

    # ------------------------------------------------------------------ profiles, history

    def upsert_profiles(self, profiles: Iterable[Profile], *, now: float | None = None) -> int:
        stamp = self._clock() if now is None else now
        rows = []
        for p in profiles:
            check_profile(p)
            rows.append((p.subject, p.first_name, p.tier, p.birthday, dump_json(p.preferences),
                         dump_json(p.consent), p.home_store, stamp))
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO profiles(subject, first_name, tier, birthday, preferences, consent, "
                "home_store, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(subject) DO UPDATE SET first_name = excluded.first_name, "
                "tier = excluded.tier, birthday = excluded.birthday, "
                "preferences = excluded.preferences, consent = excluded.consent, "
                "home_store = excluded.home_store, updated_at = excluded.updated_at",
                rows,
            )
        return len(rows)

    def replace_history(self, rows: Iterable[Transaction], *, now: float | None = None) -> int:
        """Bulk load (seeding, hub sync): the given subjects' purchases become exactly ``rows``.

        ``customer_id`` is the subject. Aggregates are recomputed from the stored lines, so a
        repeated load gives the same state. No stock change, no outbox event.
        """
        stamp = self._clock() if now is None else now
        lines = [
            (require_text(t.customer_id, "bad_history", "customer_id"), t.basket_id, t.timestamp,
             t.product_id, t.quantity, t.price, t.category)
            for t in rows
        ]
        subjects = sorted({line[0] for line in lines})
        with self._write() as conn:
            conn.executemany(
                "DELETE FROM purchases WHERE subject = ?", [(s,) for s in subjects]
            )
            conn.executemany(INSERT_PURCHASE, lines)
            conn.executemany(
                "INSERT OR REPLACE INTO aggregates(subject, baskets, total_spend, "
                "last_purchase_ts, updated_at) SELECT subject, COUNT(DISTINCT basket_id), "
                "COALESCE(SUM(quantity * COALESCE(unit_price, 0)), 0), MAX(ts), ? "
                "FROM purchases WHERE subject = ? GROUP BY subject",
                [(stamp, s) for s in subjects],
            )
        return len(lines)

    def delete_member(self, subject: str) -> None:
        """Erasure: every row about ``subject``, incl. its queued outbox events, is deleted.

        ``secure_delete`` zeroes the freed bytes and the WAL is checkpointed and truncated, so
        the subject's data does not linger in the file either.
        """
        require_text(subject, "bad_subject", "subject")
        with self._write() as conn:
            removed = sum(delete_member_rows(conn, [subject], _ERASE_TABLES).values())
        self.checkpoint()
        logger.info("erased member %s (%d rows)", subject, removed)

    # ------------------------------------------------------------------ catalog, offers

    def upsert_catalog(self, items: Iterable[CatalogItem], *, now: float | None = None) -> int:
        stamp = self._clock() if now is None else now
        rows = []
        for item in items:
            check_catalog_item(item)
            rows.append(item.row(stamp))
        with self._write() as conn:
            conn.executemany(CATALOG_UPSERT, rows)
        return len(rows)

    def upsert_offers(self, offers: Iterable[Offer]) -> int:
        rows = []
        for o in offers:
            require_text(o.offer_id, "bad_offer", "offer_id")
            if lacks_target(o.product_id, o.category):
                raise StoreInputError("bad_offer", NO_TARGET)
            require_number(o.discount_pct, "bad_offer", "discount_pct", minimum=0)
            if not o.valid_from < o.valid_to:
                raise StoreInputError("bad_offer", "valid_from must be before valid_to")
            rows.append(o.row())
        with self._write() as conn:
            conn.executemany(OFFER_UPSERT, rows)
        return len(rows)
