"""What the worker writes after a card went out: impression logs and visit rows.

Why later: the card is what the customer and staff wait for; the rows that record it are not.
Written right after publishing, they cost a transaction or two per card (~0.1-0.2 ms, plus the
GIL the MQTT thread needs to send that card). Kept here instead and written together in ONE
transaction (``flush``) when the dispatcher's queue goes idle, before a tick, before anything
reads caps and before an erasure; the dispatcher acks QoS 1 events only after the flush, so
an event is acknowledged only once everything it caused is in SQLite.

Exactness: only the worker thread writes impressions, and every cap read flushes first, so
caps always count every card shown. A crash between a card and its flush loses that card's
impression rows, as a crash between publishing and logging always did (the check-in itself
is durable before its card: ``EdgeStore.accept_checkin``).
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.rules import Suggestion
from edge.storage_faults import storage_error
from edge.store import EdgeStore
from edge.store_events import ImpressionItem, ImpressionLog
from edge.store_rows import VisitRecord
from edge.visit import Visit


def visit_row(visit: Visit) -> VisitRecord:
    return VisitRecord(visit.visit_id, visit.subject, visit.started_at, visit.ended_at, visit.zone,
                    visit.confidence, visit.checked_in)


def _impression(s: Suggestion) -> ImpressionItem:
    return (s.product_id, s.rank, s.score, s.relevance, [r.as_dict() for r in s.reasons])


class WriteBehind:
    """Deferred rows of one worker thread (not thread-safe: the worker owns it)."""

    def __init__(self, store: EdgeStore) -> None:
        self._store = store
        self._impressions: list[ImpressionLog] = []
        self._visits: dict[str, VisitRecord] = {}

    @property
    def pending(self) -> bool:
        return bool(self._impressions or self._visits)

    def log(
        self, event_id: str, visit: Visit, channel: str, shown: Sequence[Suggestion], now: float
    ) -> None:
        """What the customer was shown on one channel (the caps read it back)."""
        self._impressions.append(ImpressionLog(
            event_id, visit.visit_id, visit.subject, channel, now, [_impression(s) for s in shown]
        ))

    def save(self, visit: Visit) -> None:
        """The visit's row as it is now (a later snapshot of the same visit replaces it)."""
        self._visits[visit.visit_id] = visit_row(visit)

    def flush(self) -> None:
        """Everything pending, in one transaction (nothing when nothing is pending).

        When the disk refuses the transaction (full, I/O error) the rows are kept for the
        next flush (a visit snapshot taken since wins), and the error goes on to the
        dispatcher, which then holds the acks of the events that caused them."""
        if not self.pending:
            return
        impressions, self._impressions = self._impressions, []
        visits, self._visits = self._visits, {}
        try:
            self._store.write_behind(impressions, list(visits.values()))
        except Exception as exc:
            if storage_error(exc) is not None:
                self._impressions = impressions + self._impressions
                self._visits = {**visits, **self._visits}
            raise

    def __repr__(self) -> str:
        return f"WriteBehind(impressions={len(self._impressions)}, visits={len(self._visits)})"
