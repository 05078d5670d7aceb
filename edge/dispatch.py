"""The single worker thread: every state change of the edge happens here, in order.

Why one thread: SQLite allows one writer, the visit state machine is not thread-safe,
and a single FIFO keeps each customer's events in arrival order without locks. The MQTT
network thread and the HTTP threads only hand items over (``offer`` / ``call``); they
never touch state themselves.

Why two limits on one queue: QoS 1 items are acknowledged only after they were handled,
and the broker never has more than Receive Maximum of them un-acked in flight, so
reserving that many slots means a QoS 1 item always fits. QoS 0 items (beacons) may use
the rest and are dropped and counted when it is full: the network thread never blocks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from edge.messages import (
    MAX_PAYLOAD_BYTES,
    DeadLetter,
    Inbound,
    parse_inbound,
    payload_head,
    receive_maximum_for,
)
from edge.metrics import EdgeMetrics

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
TickFn = Callable[[], None]
_STRUCTURAL = frozenset({"bad_utf8", "bad_json", "not_object"})
_LOG_WINDOW_S = 10.0
_LOG_PER_WINDOW = 10


class QueueFull(RuntimeError):
    """``call`` could not enqueue: the edge is overloaded (map to HTTP 503)."""


class _Call:
    __slots__ = ("future", "item", "kind")

    def __init__(self, kind: str, item: Any) -> None:
        self.kind = kind
        self.item = item
        self.future: Future[Any] = Future()


_STOP = object()


class Dispatcher:
    """Owns the hand-off queue and the worker thread that drains it."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        metrics: EdgeMetrics,
        queue_size: int = 10_000,
        on_done: Callable[[Inbound], None] | None = None,
        reserved: int | None = None,
        on_dead_letter: Callable[[Inbound, DeadLetter], None] | None = None,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        tick: TickFn | None = None,
        tick_interval_s: float = 1.0,
        rejections: tuple[type[Exception], ...] = (),
    ) -> None:
        """``rejections``: exception types a handler raises for an expected refusal it
        has already counted (e.g. a refused token): logged without traceback, not a
        dead letter. A handler may also raise DeadLetter to count it under its reason."""
        if reserved is None:
            reserved = receive_maximum_for(queue_size)  # what the bridge announces
        if not 0 <= reserved < queue_size:
            raise ValueError("need 0 <= reserved < queue_size (reserve >= Receive Maximum)")
        self.handlers = dict(handlers)
        self.metrics = metrics
        self.on_done = on_done  # settable after construction: bridge.ack
        self.on_dead_letter = on_dead_letter
        self.queue_size = queue_size
        self.reserved = reserved
        self._lossy_limit = queue_size - reserved
        self._max_bytes = max_payload_bytes
        self._tick_interval = tick_interval_s
        self._ticks: list[TickFn] = [tick] if tick is not None else []
        self._rejections = rejections
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._abandon = False
        self._log_budget: dict[tuple[str, str], list[float]] = {}
        metrics.queue_depth.set_function(self._q.qsize)
        self._m_handled: dict[str, Any] = {}
        self._m_seconds: dict[str, Any] = {}

    # ------------------------------------------------------------------ producers
    @property
    def depth(self) -> int:
        return self._q.qsize()

    def offer(self, inbound: Inbound) -> bool:
        """Hand over one MQTT delivery; never blocks. False when there is no room."""
        limit = self._lossy_limit if inbound.qos == 0 else self.queue_size
        if self._q.qsize() >= limit:
            return False
        self._q.put(inbound)
        return True

    def call(self, kind: str, item: Any, timeout: float = 5.0) -> Any:
        """Run ``handlers[kind](item)`` on the worker thread and return its result.

        For HTTP threads (kiosk check-in, feedback): the same serialisation as MQTT
        traffic. Re-raises the handler's exception; TimeoutError if the worker did not
        get to it in time (it is then cancelled if it has not started).
        """
        handler = self.handlers[kind]
        if threading.current_thread() is self._thread:
            return handler(item)  # a handler calling back in must not deadlock
        if self._thread is None or self._abandon:
            raise RuntimeError("dispatcher is not running")
        if self._q.qsize() >= self.queue_size:
            raise QueueFull(f"hand-off queue full ({self.queue_size})")
        request = _Call(kind, item)
        self._q.put(request)
        try:
            return request.future.result(timeout)
        except FutureTimeout:
            request.future.cancel()
            raise TimeoutError(f"worker did not handle {kind} within {timeout}s") from None

    def add_tick(self, fn: TickFn) -> None:
        """Call ``fn()`` on the worker thread every tick interval (visit timers, outbox
        flush, cleanup): it may touch state like any handler."""
        self._ticks.append(fn)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._abandon = False
        self._thread = threading.Thread(target=self._run, name="edge-worker", daemon=True)
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float = 5.0) -> None:
        """Stop the worker. ``drain`` handles what is queued first (bounded by
        ``timeout``); what is left is not acked, so the broker redelivers QoS 1 items
        to the next run."""
        thread = self._thread
        if thread is None:
            return
        if not drain:
            self._abandon = True
        self._q.put(_STOP)
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("worker did not drain within %.1fs; abandoning the rest", timeout)
            self._abandon = True
            thread.join(timeout)
        self._thread = None
        self._fail_pending()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_interval
        while not self._abandon:
            now = time.monotonic()
            if now >= next_tick:
                self._tick()
                next_tick = now + self._tick_interval
                continue
            try:
                item = self._q.get(timeout=next_tick - now)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            if isinstance(item, Inbound):
                self._handle(item)
            elif isinstance(item, _Call):
                self._run_call(item)

    def _tick(self) -> None:
        for fn in self._ticks:
            try:
                fn()
            except Exception:
                logger.exception("tick %s failed", getattr(fn, "__qualname__", fn))

    def _run_call(self, request: _Call) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        try:
            result = self.handlers[request.kind](request.item)
        except BaseException as exc:
            request.future.set_exception(exc)
        else:
            request.future.set_result(result)

    def _handle(self, inbound: Inbound) -> None:
        kind = inbound.kind
        started = time.perf_counter()
        try:
            msg = parse_inbound(
                kind, inbound.payload, max_bytes=self._max_bytes, subject=inbound.subject
            )
        except DeadLetter as dead:
            self._dead_letter(inbound, dead)
        else:
            self._invoke(inbound, msg)
            seconds = self._m_seconds.get(kind)
            if seconds is None:
                seconds = self._m_seconds[kind] = self.metrics.handle_seconds.labels(kind)
            seconds.observe(time.perf_counter() - started)
        finally:
            self._done(inbound)

    def _invoke(self, inbound: Inbound, msg: Any) -> None:
        handler = self.handlers.get(inbound.kind)
        if handler is None:
            self._dead_letter(inbound, DeadLetter(inbound.kind, "handler_error", "no handler"))
            return
        try:
            handler(msg)
        except DeadLetter as refused:
            self._dead_letter(inbound, refused)
            return
        except self._rejections as exc:
            logger.debug("%s %s refused: %s", inbound.kind, getattr(msg, "event_id", "?"), exc)
            return
        except Exception as exc:
            logger.exception(
                "handler for %s failed on event %s", inbound.kind, getattr(msg, "event_id", "?")
            )
            failure = DeadLetter(
                inbound.kind, "handler_error", type(exc).__name__, getattr(msg, "event_id", None)
            )
            self._dead_letter(inbound, failure, log=False)
            return
        handled = self._m_handled.get(inbound.kind)
        if handled is None:
            handled = self._m_handled[inbound.kind] = self.metrics.messages_handled.labels(
                inbound.kind
            )
        handled.inc()

    def _dead_letter(self, inbound: Inbound, dead: DeadLetter, log: bool = True) -> None:
        self.metrics.dead_letters.labels(dead.kind, dead.reason).inc()
        if log and self._may_log(dead.kind, dead.reason):
            head = payload_head(inbound.payload) if dead.reason in _STRUCTURAL else "-"
            logger.warning(
                "dead letter kind=%s reason=%s detail=%s topic=%s event_id=%s size=%d head=%s",
                dead.kind, dead.reason, dead.detail, inbound.topic, dead.event_id,
                len(inbound.payload), head,
            )
        if self.on_dead_letter is not None:
            try:
                self.on_dead_letter(inbound, dead)
            except Exception:
                logger.exception("publishing a dead letter failed")

    def _may_log(self, kind: str, reason: str) -> bool:
        """At most a few warnings per (kind, reason) per window: a flood of garbage is
        visible in the counters, it must not also fill the disk with logs."""
        now = time.monotonic()
        budget = self._log_budget.setdefault((kind, reason), [now, 0.0])
        if now - budget[0] > _LOG_WINDOW_S:
            if budget[1] > _LOG_PER_WINDOW:
                logger.warning(
                    "%d more dead letters kind=%s reason=%s not logged",
                    int(budget[1]) - _LOG_PER_WINDOW, kind, reason,
                )
            budget[0], budget[1] = now, 0.0
        budget[1] += 1
        return budget[1] <= _LOG_PER_WINDOW

    def _done(self, inbound: Inbound) -> None:
        if self.on_done is None:
            return
        try:
            self.on_done(inbound)
        except Exception:
            logger.exception("ack of %s mid=%d failed", inbound.kind, inbound.mid)

    def _fail_pending(self) -> None:
        """Callers still waiting in ``call`` get an error now rather than a timeout."""
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Call) and not item.future.done():
                try:
                    item.future.set_exception(RuntimeError("dispatcher stopped"))
                except Exception:  # cancelled concurrently
                    continue

