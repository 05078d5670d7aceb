"""The outbox shipper: this store's events to the hub, in batches, exactly once there.

Events are deleted locally only once the hub answered for them (accepted, duplicate or
refused); anything else stays queued and is sent again, which the hub's idempotence by
``event_id`` makes harmless. While the hub is away the outbox grows (a day of a busy store is
~200,000 events) and drains batch after batch, without pause, once it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from edge.store import EdgeStore
from edge.store_sync import SyncReader
from edge.sync_http import HubLink, HubRefused, HubUnavailable
from edge.sync_metrics import SyncMetrics
from edge.sync_plan import (
    Backoff,
    BadResponse,
    JobState,
    OutboxRow,
    events_body,
    halves,
    interpret_events_response,
)

logger = logging.getLogger(__name__)

WHOLE_BATCH_REFUSALS = frozenset({400, 413, 422})  # the hub could not read the batch at all


class OutboxPusher:
    """One thread's worth of pushing; ``SyncClient`` owns it and its link."""

    def __init__(
        self,
        *,
        store: EdgeStore,
        metrics: SyncMetrics,
        backoff: Backoff,
        batch_size: int,
        interval_s: float,
        io: Callable[[], tuple[HubLink, SyncReader]],
        on_contact: Callable[[bool], None],
        clock: Callable[[], float],
        draw: Callable[[], float],
    ) -> None:
        self.store = store
        self.metrics = metrics
        self._backoff = backoff
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._io = io
        self._contact = on_contact
        self._clock = clock
        self._draw = draw
        self.state = JobState()
        self.wake = threading.Event()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self.push_round():
                wait = max(self._interval_s, self.state.next_at - self._clock())
                self.wake.wait(wait)
                self.wake.clear()

    def resume(self) -> None:
        """The hub answered the other thread: stop waiting out the backoff, drain now."""
        self.state = JobState()
        self.wake.set()

    def push_round(self) -> bool:
        """Send one batch of the outbox; True if the next should follow at once."""
        if self.state.next_at > self._clock():
            return False
        link, reader = self._io()
        rows = reader.outbox_batch(self._batch_size)
        if not rows:
            return False
        try:
            deleted = self._push(link, rows)
        except (HubUnavailable, HubRefused, BadResponse) as exc:
            self.state = self.state.failed(self._clock(), self._backoff, self._draw())
            if isinstance(exc, HubUnavailable):
                self._contact(False)
            self.metrics.errors.labels("outbox", error_kind(exc)).inc()
            if self.state.failures == 1 or self.state.failures % 10 == 0:
                logger.warning("sync outbox failed (%d in a row): %s", self.state.failures, exc)
            return False
        self.state = JobState()
        self._contact(True)
        return deleted > 0 and len(rows) == self._batch_size

    def _push(self, link: HubLink, rows: Sequence[OutboxRow]) -> int:
        """POST a batch; a batch the hub could not read at all is split down to single
        events, and a single unreadable event is dropped (logged) rather than block the rest."""
        try:
            answer = link.post_events(events_body(rows))
        except HubRefused as exc:
            if exc.status not in WHOLE_BATCH_REFUSALS:
                raise
            if len(rows) == 1:
                logger.warning("hub refused event %s (%s); dropped", rows[0].event_id, exc)
                self.metrics.pushed.labels("refused").inc()
                return self.store.outbox_ack([rows[0].seq])
            return sum(self._push(link, half) for half in halves(rows))
        outcome = interpret_events_response(rows, answer)
        for event_id, reason in outcome.refused.items():
            logger.info("hub refused event %s: %s", event_id, reason)
        self.metrics.pushed.labels("accepted").inc(outcome.accepted)
        self.metrics.pushed.labels("duplicate").inc(outcome.duplicates)
        self.metrics.pushed.labels("refused").inc(len(outcome.refused))
        return self.store.outbox_ack(outcome.delete) if outcome.delete else 0


def error_kind(exc: Exception) -> str:
    if isinstance(exc, HubRefused):
        return f"http_{exc.status}"
    if isinstance(exc, BadResponse):
        return "bad_response"
    return "internal"
