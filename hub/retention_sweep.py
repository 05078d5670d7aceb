"""The hub retention sweep's I/O: delete in short write batches (rules and why:
``hub.retention``; docs/privacy.md, "Hub").

``HubSweeper.sweep()`` runs one sweep (``storeside-hub sweep`` calls it once; the hub's
lifespan starts ``start()``, a thread that sweeps every ``retention.sweep_interval_s``). Each
batch is one ``db.write()`` transaction: select and delete at most ``batch_rows`` due rows
along a time index, and, for purchase lines, recompute the touched members' aggregates and
their feed rows in the same transaction, so a feed page never sees aggregates that disagree
with the history. The hold of every batch is measured (and exported when metrics are given).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from hub.members import expire_relevance, refresh_relevance
from hub.retention import (
    DROP_EMPTY_AGGREGATES_SQL,
    RECOMPUTE_AGGREGATES_SQL,
    RULES,
    Rule,
    SweepReport,
    cutoffs,
    delete_batch_sql,
    due_count_sql,
)
from hub.storage import HubDB, StorageClosedError

logger = logging.getLogger(__name__)

# Between two batches: Python's lock is not fair, so a sweep that took the write lock again
# at once would starve an ingesting store (measured on 100k events: without the pause a
# writer beside the sweep got 6 writes in and waited up to 42 ms; with it, 149 and 1.2 ms).
BATCH_PAUSE_S = 0.002


class HubSweeper:
    """One hub's retention sweep; ``metrics`` (a ``hub.metrics.HubMetrics``) is optional."""

    def __init__(self, db: HubDB, settings: Any, relevance: Any, metrics: Any = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.db = db
        self.settings = settings  # hub.settings.HubRetentionSettings
        self.relevance = relevance  # hub.settings.RelevanceSettings
        self.metrics = metrics
        self.clock = clock or db.clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: SweepReport | None = None

    # ------------------------------------------------------------------ one sweep
    def due(self, now: float | None = None) -> dict[str, int]:
        """Rows a sweep at ``now`` would delete, per table (nothing is deleted)."""
        limits = cutoffs(self.clock() if now is None else now, self.settings, self.relevance)
        with self.db.read() as conn:
            return {rule.table: int(conn.execute(due_count_sql(rule),
                                                 (limits.of(rule),)).fetchone()[0])
                    for rule in RULES}

    def sweep(self, now: float | None = None) -> SweepReport:
        now = self.clock() if now is None else now
        limits = cutoffs(now, self.settings, self.relevance)
        if limits.presence_clamped:
            logger.warning("retention.presence_days is shorter than a relevance window; "
                           "presence is kept until the window ends")
        report = SweepReport(started_at=now)
        stores: set[str] = set()
        for rule in RULES:
            stores |= self._age_out(rule, limits.of(rule), report)
        for store in sorted(stores):  # what the store's next poll would do, done now
            report.expired_feed_rows += expire_relevance(self.db, store)
        if self.metrics is not None:
            for table, count in report.rows.items():
                self.metrics.retention_rows.labels(table).inc(count)
            self.metrics.retention_last.set(self.clock())
        self.last = report
        if report.rows:
            logger.info("retention sweep: rows %s, %d members' aggregates recomputed, "
                        "%d batches, longest write hold %.1f ms", dict(report.rows),
                        report.members_recomputed, report.batches, report.max_hold_s * 1000)
        return report

    def _age_out(self, rule: Rule, before: float, report: SweepReport) -> set[str]:
        """Batches until none is full; returns the stores whose presence rows went."""
        delete, size = delete_batch_sql(rule), int(self.settings.batch_rows)
        stores: set[str] = set()
        while not self._stop.is_set():
            with self.db.write() as conn:
                started = time.perf_counter()
                cursor = conn.execute(delete, (before, size))
                returned = [r[0] for r in cursor.fetchall()] if rule.returning else []
                if rule.table == "purchases":
                    report.members_recomputed += self._recompute(conn, returned)
                elif rule.table == "presence":
                    stores.update(returned)
                deleted = len(returned) if rule.returning else cursor.rowcount
            hold = time.perf_counter() - started  # BEGIN IMMEDIATE .. COMMIT, commit included
            if self.metrics is not None:
                self.metrics.retention_hold.observe(hold)
            report.batch({rule.table: deleted}, hold)
            if deleted < size or self._stop.wait(BATCH_PAUSE_S):
                break
        return stores

    def _recompute(self, conn: Any, subjects: list[str | None]) -> int:
        """Aggregates of the batch's members from the lines left, and a new feed sequence
        for the stores holding them (in the batch's transaction)."""
        wanted = sorted({s for s in subjects if s})
        if not wanted:
            return 0
        batch = json.dumps(wanted)
        conn.execute(RECOMPUTE_AGGREGATES_SQL, (self.clock(), batch))
        conn.execute(DROP_EMPTY_AGGREGATES_SQL, (batch,))
        members = [r[0] for r in conn.execute(
            "SELECT subject FROM members WHERE subject IN (SELECT value FROM json_each(?))",
            (batch,))]
        refresh_relevance(self.db, conn, members, self.relevance)
        return len(wanted)

    # ------------------------------------------------------------------ the thread
    def start(self, first_after_s: float = 60.0) -> HubSweeper:
        self._thread = threading.Thread(target=self._run, args=(first_after_s,),
                                        name="hub-retention", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, first_after_s: float) -> None:
        wait = first_after_s
        while not self._stop.wait(wait):
            wait = float(self.settings.sweep_interval_s)
            try:
                self.sweep()
            except StorageClosedError:
                return
            except Exception:  # the next sweep tries again; the hub keeps serving
                logger.exception("hub retention sweep failed")
