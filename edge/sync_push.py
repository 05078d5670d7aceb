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
from concurrent.futures import Future, ThreadPoolExecutor

from edge.storage_faults import storage_error
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
        # While draining, the delete of batch N runs beside the POST of batch N+1 (SQLite
        # and the socket both release the GIL): rows up to ``_sent_upto`` are skipped.
        self._sent_upto = 0
        self._deleting: Future[int] | None = None
        self._deleter: ThreadPoolExecutor | None = None
        self._full_deletes = 0

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if not self.push_round():
                    wait = max(self._interval_s, self.state.next_at - self._clock())
                    self.wake.wait(wait)
                    self.wake.clear()
        finally:
            self.close()

    def close(self) -> None:
        self._settle()
        if self._deleter is not None:
            self._deleter.shutdown(wait=True)
            self._deleter = None

    def resume(self) -> None:
        """The hub answered the other thread: stop waiting out the backoff, drain now."""
        self.state = JobState()
        self.wake.set()

    def push_round(self) -> bool:
        """Send one batch of the outbox; True if the next should follow at once."""
        if self.state.next_at > self._clock():
            return False
        link, reader = self._io()
        rows = reader.outbox_batch(self._batch_size, after_seq=self._sent_upto)
        more = False
        try:
            if rows:
                answered = self._push(link, rows)
                self._delete_later(answered)
                self._sent_upto = rows[-1].seq
                more = bool(answered) and len(rows) == self._batch_size
        except (HubUnavailable, HubRefused, BadResponse) as exc:
            self.state = self.state.failed(self._clock(), self._backoff, self._draw())
            if isinstance(exc, HubUnavailable):
                self._contact(False)
            self.metrics.errors.labels("outbox", error_kind(exc)).inc()
            if self.state.failures == 1 or self.state.failures % 10 == 0:
                logger.warning("sync outbox failed (%d in a row): %s", self.state.failures, exc)
        else:
            if rows:
                self.state = JobState()
                self._contact(True)
        if not more:  # end of a drain: deletes done, unanswered rows are read again next time
            self._settle()
            self._sent_upto = 0
        return more

    def _push(self, link: HubLink, rows: Sequence[OutboxRow]) -> list[int]:
        """POST a batch; returns the seqs the hub answered for. A batch the hub could not
        read at all is split down to single events, and a single unreadable event is
        dropped (logged) rather than block the rest."""
        try:
            answer = link.post_events(events_body(rows))
        except HubRefused as exc:
            if exc.status not in WHOLE_BATCH_REFUSALS:
                raise
            if len(rows) == 1:
                logger.warning("hub refused event %s (%s); dropped", rows[0].event_id, exc)
                self.metrics.pushed.labels("refused").inc()
                return [rows[0].seq]
            return [seq for half in halves(rows) for seq in self._push(link, half)]
        outcome = interpret_events_response(rows, answer)
        for event_id, reason in outcome.refused.items():
            logger.info("hub refused event %s: %s", event_id, reason)
        self.metrics.pushed.labels("accepted").inc(outcome.accepted)
        self.metrics.pushed.labels("duplicate").inc(outcome.duplicates)
        self.metrics.pushed.labels("refused").inc(len(outcome.refused))
        return list(outcome.delete)

    def _delete_later(self, seqs: list[int]) -> None:
        self._settle()  # at most one delete in flight
        if not seqs:
            return
        if self._deleter is None:
            self._deleter = ThreadPoolExecutor(1, thread_name_prefix="edge-sync-ack")
        self._deleting = self._deleter.submit(self.store.outbox_ack, seqs)

    def _settle(self) -> None:
        """Wait for the delete in flight; a failed one only means those rows are sent
        again (the hub answers duplicates)."""
        deleting, self._deleting = self._deleting, None
        if deleting is not None:
            try:
                deleting.result()
            except Exception as exc:
                if storage_error(exc) is None:
                    logger.exception("deleting pushed outbox rows failed; they will be re-sent")
                    return
                self._full_deletes += 1  # a full disk: the worker's episode log says it once
                if self._full_deletes == 1 or self._full_deletes % 100 == 0:
                    logger.warning("disk full: %d outbox deletes refused; the rows are re-sent "
                                   "(the hub answers duplicates)", self._full_deletes)


def error_kind(exc: Exception) -> str:
    if isinstance(exc, HubRefused):
        return f"http_{exc.status}"
    if isinstance(exc, BadResponse):
        return "bad_response"
    return "internal"
