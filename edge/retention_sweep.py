"""The retention sweep's I/O: plan with reads, delete in short write batches (rules:
``edge.retention``; what and why: docs/privacy.md).

A thread of its own, like the WAL checkpointer: the sweep touches SQLite only (a member not
seen for weeks has no open visit, no live card; the offers cache follows ``offers_version``,
which the ``offer_subjects`` triggers bump). Planning reads run on the sweeper's own
read-only connection, beside the writer (WAL); each delete batch is one ``BEGIN IMMEDIATE``
transaction under the store's write lock that re-checks what it deletes (a member who walked
in since the plan stays), so the event worker waits for one batch at most. The hold of every
batch is measured and exported.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from edge.metrics import MetricSet
from edge.retention import (
    AGE_RULES,
    AgeRule,
    SweepReport,
    chunks,
    cutoffs,
    delete_rows_sql,
    due_rows_sql,
    last_seen_sql,
)
from edge.store import MEMBER_TABLES, delete_member_rows
from models.sqlite_db import connect_readonly

logger = logging.getLogger(__name__)

HOLD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)


class Writer(Protocol):
    """The store's writer (``SQLiteDB``): its file and its one write transaction."""

    path: Path

    def write(self) -> Any: ...


class Settings(Protocol):
    """``edge.settings.RetentionSettings``."""

    enabled: bool
    member_days: float
    event_days: float
    sweep_interval_s: float
    batch_rows: int
    batch_members: int


class RetentionMetrics(MetricSet):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.rows = self.counter("storeside_retention_rows_deleted_total",
                                 "Rows the retention sweep deleted, by table", "table")
        self.members = self.counter("storeside_retention_members_forgotten_total",
                                    "Members forgotten for not being seen in member_days")
        self.last_sweep = self.gauge("storeside_retention_last_sweep_timestamp_seconds",
                                     "When the last retention sweep finished (epoch s)")
        self.hold = self.histogram("storeside_retention_batch_hold_seconds",
                                   "Write-lock hold of one retention delete batch",
                                   buckets=HOLD_BUCKETS)


class RetentionSweeper:
    """``sweep(now)`` does one sweep; ``start()`` runs one every ``sweep_interval_s``."""

    def __init__(self, store: Writer, settings: Settings, metrics: RetentionMetrics,
                 clock: Callable[[], float] = time.time, busy_timeout_ms: int = 5000) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._busy_timeout_ms = busy_timeout_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: SweepReport | None = None

    # ------------------------------------------------------------------ one sweep
    def sweep(self, now: float | None = None) -> SweepReport:
        now = self.clock() if now is None else now
        s = self.settings
        limits = cutoffs(now, s.member_days, s.event_days)
        report = SweepReport(started_at=now)
        reader = connect_readonly(Path(self.store.path), self._busy_timeout_ms)
        try:
            self._forget_members(reader, limits.member, report)
            for rule in AGE_RULES:
                self._age_out(reader, rule, limits.of(rule), report)
        finally:
            reader.close()
        for table, count in report.rows.items():
            self.metrics.rows.labels(table).inc(count)
        self.metrics.members.inc(report.members)
        self.metrics.last_sweep.set(self.clock())
        self.last = report
        if report.rows:
            logger.info("retention sweep: %d members forgotten, rows %s, %d batches, "
                        "longest write hold %.1f ms", report.members, dict(report.rows),
                        report.batches, report.max_hold_s * 1000)
        return report

    def _forget_members(self, reader: Any, before: float, report: SweepReport) -> None:
        stale = [row[0] for row in reader.execute(last_seen_sql(False), (before,))]
        recheck = last_seen_sql(True)
        for batch in chunks(stale, self.settings.batch_members):
            if self._stop.is_set():
                return
            with self.store.write() as conn:
                started = time.perf_counter()
                still = [row[0] for row in conn.execute(recheck, (json.dumps(list(batch)),
                                                                  before))]
                counts = delete_member_rows(conn, still, MEMBER_TABLES)
            report.batch(counts, self._held(started))
            report.members += len(still)

    def _age_out(self, reader: Any, rule: AgeRule, before: float, report: SweepReport) -> None:
        select, delete = due_rows_sql(rule), delete_rows_sql(rule)
        position: tuple[Any, Any] = (float("-inf"), "")
        while not self._stop.is_set():
            rows = reader.execute(select, (before, *position, self.settings.batch_rows)).fetchall()
            if not rows:
                return
            position = (rows[-1][1], rows[-1][0])
            with self.store.write() as conn:
                started = time.perf_counter()
                deleted = conn.executemany(delete, [(key, before) for key, _ in rows]).rowcount
            report.batch({rule.table: deleted}, self._held(started))
            if len(rows) < self.settings.batch_rows:
                return

    def _held(self, started: float) -> float:
        held = time.perf_counter() - started  # BEGIN IMMEDIATE .. COMMIT (commit included)
        self.metrics.hold.observe(held)
        return held

    # ------------------------------------------------------------------ the thread
    def start(self, first_after_s: float = 60.0) -> RetentionSweeper:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(first_after_s,),
                                        name="retention-sweep", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)

    def _run(self, first_after_s: float) -> None:
        delay = min(first_after_s, self.settings.sweep_interval_s)
        while not self._stop.wait(delay):
            delay = self.settings.sweep_interval_s
            try:
                self.sweep()
            except Exception:  # the store keeps serving; the next sweep tries again
                logger.exception("retention sweep failed")
