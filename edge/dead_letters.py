"""What happens to an inbound event the edge refuses: counted, logged (sparingly), published.

Every reject moves exactly one counter, ``storeside_dead_letters_total{kind, reason}``: that
is the contract the fuzzers check. The log line carries metadata only (topic, reason, event
id, size; for unreadable payloads the *shape* of their first bytes, ``payload_head``), never
the payload, which may hold whatever a broken app put there. A flood of garbage shows in the
counters; the log gets at most a few lines per (kind, reason) per window and then one line
saying how many were left out, so it cannot fill the SD card.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge.messages import DeadLetter, Inbound, payload_head
from edge.metrics import EdgeMetrics

logger = logging.getLogger(__name__)

_STRUCTURAL = frozenset({"bad_utf8", "bad_json", "not_object"})
LOG_WINDOW_S = 10.0
LOG_PER_WINDOW = 10

Publisher = Callable[[Inbound, DeadLetter], None]


class DeadLetters:
    """Counts, logs and publishes rejects; the worker thread is its only caller."""

    def __init__(self, metrics: EdgeMetrics, publish: Publisher | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.publish = publish  # settable after construction: bridge.publish_dead_letter
        self._clock = clock
        self._budget: dict[tuple[str, str], list[float]] = {}

    def report(self, inbound: Inbound, dead: DeadLetter, log: bool = True) -> None:
        self.metrics.dead_letters.labels(dead.kind, dead.reason).inc()
        if log and self._may_log(dead.kind, dead.reason):
            head = payload_head(inbound.payload) if dead.reason in _STRUCTURAL else "-"
            logger.warning(
                "dead letter kind=%s reason=%s detail=%s topic=%s event_id=%s size=%d head=%s",
                dead.kind, dead.reason, dead.detail, inbound.topic, dead.event_id,
                len(inbound.payload), head,
            )
        if self.publish is not None:
            try:
                self.publish(inbound, dead)
            except Exception:
                logger.exception("publishing a dead letter failed")

    def _may_log(self, kind: str, reason: str) -> bool:
        now = self._clock()
        budget = self._budget.setdefault((kind, reason), [now, 0.0])
        if now - budget[0] > LOG_WINDOW_S:
            if budget[1] > LOG_PER_WINDOW:
                logger.warning(
                    "%d more dead letters kind=%s reason=%s not logged",
                    int(budget[1]) - LOG_PER_WINDOW, kind, reason,
                )
            budget[0], budget[1] = now, 0.0
        budget[1] += 1
        return budget[1] <= LOG_PER_WINDOW
