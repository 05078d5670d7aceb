"""Visit rows across a restart: the tracker's checkpoint, the open rows, their closing.

A mixin of ``EdgeStore`` (like ``EventWrites``): every write is one ``BEGIN IMMEDIATE``
transaction through ``_write()``. The visit row itself (``save_visit``) is written by the
event handlers; this only adds the columns of migration 7 (``last_seen_at``, ``resume``,
``end_reason``) and never creates a row: a checkpoint of a visit erased meanwhile updates
nothing, so it cannot bring the erased member back. The rules live in ``edge.visit_restore``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager

from edge.store_rows import require_number, require_text
from edge.visit import Visit
from edge.visit_restore import Closure, OpenVisit

_CHECKPOINT = (
    "UPDATE visits SET last_seen_at = ?, resume = ?, zone = ?, confidence = ? "
    "WHERE visit_id = ? AND ended_at IS NULL"
)
_CLOSE = (
    "UPDATE visits SET ended_at = ?, end_reason = ?, confidence = 0 "
    "WHERE visit_id = ? AND ended_at IS NULL"
)


class VisitStateWrites:
    """Checkpoint, read and close the rows of visits still open."""

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def checkpoint_visits(self, saved: Sequence[tuple[Visit, str]]) -> set[str]:
        """Each (snapshot, resume JSON) onto its still-open row, one transaction; returns
        the visit ids whose row took it (a row not written yet, ended or erased takes
        nothing: the caller tries again later)."""
        rows = []
        for visit, resume in saved:
            require_text(visit.visit_id, "bad_visit", "visit_id")
            require_text(resume, "bad_visit", "resume")
            rows.append((require_number(visit.last_seen, "bad_visit", "last_seen"), resume,
                         visit.zone, visit.confidence, visit.visit_id))
        if not rows:
            return set()
        with self._write() as conn:
            return {row[-1] for row in rows if conn.execute(_CHECKPOINT, row).rowcount}

    def open_visits(self) -> list[OpenVisit]:
        """Rows without ``ended_at`` (partial index ``visits_open``), oldest first."""
        with self._write() as conn:  # once at start-up, before the worker runs
            rows = conn.execute(
                "SELECT visit_id, subject, started_at, last_seen_at, resume FROM visits "
                "WHERE ended_at IS NULL ORDER BY started_at, visit_id"
            ).fetchall()
        return [OpenVisit(*row) for row in rows]

    def close_visits(self, closures: Sequence[Closure]) -> int:
        """End open rows (``ended_at``, ``end_reason``); one transaction."""
        if not closures:
            return 0
        with self._write() as conn:
            return sum(
                conn.execute(_CLOSE, (c.ended_at, c.reason, c.visit_id)).rowcount
                for c in closures
            )
