"""Visits across a restart, the I/O half: checkpoint on the worker, restore at start-up.

``edge.visit_restore`` holds the rules (pure); this reads and writes the store and rebuilds
the staff cards. Both run where the single-writer rule holds: the checkpoint is a tick of
the dispatcher's worker thread, the restore runs in ``EdgeRuntime.start`` before the worker
starts (nothing else touches the tracker or writes yet) and before the broker's redelivered
events can reach the tracker, so none of them starts a second visit for a restored customer.

A restored visit's card is ranked again (``EdgeService.recommend(..., redisplay=True)``) with
the same visit id, so the caps and dismissals read from SQLite by visit id still apply; it
sends no app offer (the phone had its push) and logs no impressions (staff saw the card
before the restart; counting it again would spend the visit's caps on a restart).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

from edge.service import EdgeService
from edge.store import EdgeStore
from edge.visit import VisitState, VisitTracker
from edge.visit_restore import Checkpoints, RestoreResult, encode_state, restore_open_visits

logger = logging.getLogger(__name__)

# Time-only progress (last seen, zone heard) is written at most this often: a restored visit
# may time out up to this much early. Anything else is written at the next tick.
CHECKPOINT_DRIFT_S = 30.0
# Rows written per tick at most (~15 us each): 1,000 visits changing zone in one second
# cost a 14 ms tick that a check-in queued behind it waited for; now at most ~1.5 ms.
CHECKPOINT_ROWS_PER_TICK = 100
RESTORE_TRIGGER = "restore"


class VisitCheckpoint:
    """Writes the changed states of active visits into their rows (one transaction)."""

    def __init__(
        self, store: EdgeStore, tracker: VisitTracker, drift_s: float = CHECKPOINT_DRIFT_S,
        rows_per_tick: int | None = CHECKPOINT_ROWS_PER_TICK,
    ) -> None:
        self._store = store
        self._tracker = tracker
        self._plan = Checkpoints(drift_s)
        self._rows_per_tick = rows_per_tick

    def prime(self, states: Iterable[VisitState]) -> None:
        """``states`` are in their rows already (restored from them)."""
        self._plan.mark(states)

    def tick(self) -> None:
        """Dispatcher tick (worker thread), a bounded batch of the due rows."""
        self._write(self._rows_per_tick)

    def flush(self) -> None:
        """Every due row at once: the last write of a graceful stop."""
        self._write(None)

    def _write(self, limit: int | None) -> None:
        due = self._plan.due(self._tracker.states(), limit)
        saved = []
        for state in due:
            visit = self._tracker.get(state.subject)
            if visit is not None and visit.visit_id == state.visit_id:
                saved.append((visit, encode_state(state)))
        if not saved:
            return
        written = self._store.checkpoint_visits(saved)
        self._plan.mark(s for s in due if s.visit_id in written)


def restore_visits(service: EdgeService, checkpoint: VisitCheckpoint, now: float) -> RestoreResult:
    """Bring the open visits back and rebuild their staff cards; close the rest in SQLite."""
    result = restore_open_visits(service.tracker, service.store.open_visits(), now)
    service.store.close_visits(result.closed)
    checkpoint.prime(result.states)
    for visit in result.restored:
        if not visit.checked_in:  # only a check-in makes a card; the tracker has the rest
            continue
        try:
            service.recommend(visit, RESTORE_TRIGGER, now, zone=visit.zone, redisplay=True)
        except Exception:  # one bad card must not keep the store's edge from starting
            logger.exception("restored visit %s: its card could not be rebuilt", visit.visit_id)
    if result.restored or result.closed:
        reasons = Counter(c.reason for c in result.closed)
        logger.info("restart: %d open visits restored, %d closed %s",
                    len(result.restored), len(result.closed), dict(reasons))
    return result
