"""The single worker thread: every state change of the edge happens here, in order.

Why one thread: SQLite allows one writer, the visit state machine is not thread-safe,
and a single FIFO keeps each customer's events in arrival order without locks. The MQTT
network thread and the HTTP threads only hand items over (``offer`` / ``call``); they
never touch state themselves.

Why two limits on one queue: QoS 1 items are acknowledged only after they were handled,
and the broker never has more than Receive Maximum of them un-acked in flight, so
reserving that many slots means a QoS 1 item always fits. QoS 0 items (beacons) may use
the rest and are dropped and counted when it is full: the network thread never blocks.

Why two lanes: a check-in waits for nobody's beacons. QoS 0 deliveries (beacon sightings,
superseded by the next one anyway) queue in a lane of their own that the worker takes from
only when the lane of everything else (QoS 1 events, HTTP calls) is empty; order within
each lane is kept, and a customer's beacons never had an order relative to their check-in
(different topics, different QoS).

Why a flush before the acks (group commit): handlers defer the rows that only record what
they published (``flush``, e.g. ``EdgeService.flush``); the worker writes them in one
transaction when the queue has been idle for ``flush_idle_s`` (so the MQTT thread sends the
cards first), at most ``flush_max_delay_s`` after the first handled item, before ticks and
before stopping, and only then acks the QoS 1 items handled since.

Why a full disk parks events instead of dead-lettering them: an event SQLite could not write
(SQLITE_FULL, I/O error; ``edge.storage_faults``) is not handled, so it must not be acked.
The worker keeps such QoS 1 items (the broker never redelivers on the same connection), holds
the acks of a group commit whose flush failed together with its rows, and retries with a
backoff (0.25 s doubling to 5 s): first a one-row probe write, then the held rows and acks,
then the parked items in arrival order. HTTP calls get ``StorageUnavailable`` (507).
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

from edge.dead_letters import DeadLetters
from edge.dispatch_storage import RETRY_INITIAL_S, StorageRetry
from edge.messages import (
    MAX_PAYLOAD_BYTES,
    DeadLetter,
    Inbound,
    parse_inbound,
    receive_maximum_for,
)
from edge.metrics import EdgeMetrics
from edge.storage_faults import StorageHealth, StorageUnavailable, storage_error

logger = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
TickFn = Callable[[], None]


class QueueFull(RuntimeError):
    """``call`` could not enqueue: the edge is overloaded (map to HTTP 503)."""


class _Call:
    __slots__ = ("future", "item", "kind")

    def __init__(self, kind: str, item: Any) -> None:
        self.kind = kind
        self.item = item
        self.future: Future[Any] = Future()


_STOP = object()
_FLUSH_MAX_ITEMS = 100  # un-acked QoS 1 items held for one flush, well under Receive Maximum


class Dispatcher(StorageRetry):
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
        flush: Callable[[], None] | None = None,
        flush_idle_s: float = 0.001,
        flush_max_delay_s: float = 0.01,
        storage: StorageHealth | None = None,
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
        self.dead_letters = DeadLetters(metrics, on_dead_letter)
        self.queue_size = queue_size
        self.reserved = reserved
        self._lossy_limit = queue_size - reserved
        self._max_bytes = max_payload_bytes
        self._tick_interval = tick_interval_s
        self._ticks: list[TickFn] = [tick] if tick is not None else []
        self._due_ticks: list[TickFn] = []  # this round's tick functions not run yet
        self._rejections = rejections
        self._flush = flush
        self._flush_idle_s = flush_idle_s
        self._flush_max_delay_s = flush_max_delay_s
        self._unflushed_since: float | None = None  # first item handled since the last flush
        self._unacked: list[Inbound] = []
        # A full disk (edge.storage_faults): QoS 1 items not written, kept un-acked, retried
        self.storage = storage
        self._parked: list[Inbound] = []
        self._retry_at: float | None = None
        self._retry_delay = RETRY_INITIAL_S
        # Two lanes and one wake-up token per item (put after the item, so a token always
        # finds an item): the worker blocks on ``_wake`` and then takes from ``_q`` first.
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lossy: queue.SimpleQueue[Inbound] = queue.SimpleQueue()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._abandon = False
        metrics.queue_depth.set_function(self._depth)
        self._m_handled: dict[str, Any] = {}
        self._m_seconds: dict[str, Any] = {}

    # ------------------------------------------------------------------ producers
    @property
    def depth(self) -> int:
        return self._depth()

    def _depth(self) -> int:
        return self._q.qsize() + self._lossy.qsize()

    def _put(self, item: object) -> None:
        self._q.put(item)
        self._wake.put(None)

    def offer(self, inbound: Inbound) -> bool:
        """Hand over one MQTT delivery; never blocks. False when there is no room."""
        if inbound.qos == 0:
            if self._depth() >= self._lossy_limit:
                return False
            self._lossy.put(inbound)
            self._wake.put(None)
            return True
        if self._depth() >= self.queue_size:
            return False
        self._put(inbound)
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
        if self._depth() >= self.queue_size:
            raise QueueFull(f"hand-off queue full ({self.queue_size})")
        request = _Call(kind, item)
        self._put(request)
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
        self._put(_STOP)
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
        round_at = next_tick
        while not self._abandon:
            now = time.monotonic()
            if now >= next_tick:
                if not self._due_ticks:
                    round_at = now
                self._due_ticks.extend(fn for fn in self._ticks if fn not in self._due_ticks)
                next_tick = now + self._tick_interval
            # a round's tick functions one by one, QoS 1 events and calls first (but a
            # round waits at most half an interval for them)
            if self._due_ticks and (
                self._q.empty() or now - round_at >= self._tick_interval / 2
            ):
                self._commit()
                self._tick(self._due_ticks.pop(0))  # may defer rows too: flushed like the rest
                self._mark_unflushed()
                continue
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_stalled()
                continue
            timeout = next_tick - now
            if self._retry_at is not None:
                timeout = min(timeout, self._retry_at - now)
            since = self._unflushed_since
            if since is not None and self._retry_at is None:
                due = since + self._flush_max_delay_s - now
                if due <= 0 or len(self._unacked) >= _FLUSH_MAX_ITEMS:
                    self._commit()
                    continue
                timeout = min(timeout, self._flush_idle_s, due)
            try:
                self._wake.get(timeout=timeout)
            except queue.Empty:
                if since is not None:  # idle: the cards are out, write what recorded them
                    self._commit()
                continue
            item = self._next()
            if item is _STOP:
                for _ in range(self._lossy.qsize()):  # drain: what was queued is handled
                    if self._abandon:
                        break
                    self._handle(self._lossy.get_nowait())
                break
            if isinstance(item, Inbound):
                self._handle(item)
            elif isinstance(item, _Call):
                self._run_call(item)
            self._mark_unflushed()
        self._commit(final=True)  # what was handled is written and acked, also when abandoning

    def _next(self) -> object:
        """The oldest QoS 1 item or call, else the oldest QoS 0 delivery (a wake-up token
        was taken, so one of the lanes holds an item; None if not, e.g. after a restart)."""
        try:
            return self._q.get_nowait()
        except queue.Empty:
            pass
        try:
            return self._lossy.get_nowait()
        except queue.Empty:
            return None

    def _mark_unflushed(self) -> None:
        if self._flush is not None and self._unflushed_since is None:
            self._unflushed_since = time.monotonic()

    def _commit(self, final: bool = False) -> bool:
        """The group commit: the handlers' deferred rows, then the acks they waited for.
        False when the disk refused the rows: rows and acks are held for the retry (while
        one is pending, only the retry or the ``final`` commit at stop tries again)."""
        self._unflushed_since = None
        if self._retry_at is not None and not final:
            return False
        if self._flush is not None:
            try:
                self._flush()
            except Exception as exc:
                if self._storage_failed(exc, "flush"):
                    return False  # kept by the write-behind; the acks wait with them
                # the events were handled; their own writes are committed
                logger.exception("writing the deferred rows failed; they are lost")
        unacked, self._unacked = self._unacked, []
        for inbound in unacked:
            self._ack(inbound)
        return True

    def _tick(self, fn: TickFn) -> None:
        """One tick function; the worker runs a round's functions one at a time and takes
        waiting QoS 1 events and calls in between (a check-in waits for one function,
        not the whole round)."""
        try:
            fn()
        except Exception as exc:
            if not self._storage_failed(exc, "tick"):
                logger.exception("tick %s failed", getattr(fn, "__qualname__", fn))

    def _run_call(self, request: _Call) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        try:
            result = self.handlers[request.kind](request.item)
        except BaseException as exc:
            if isinstance(exc, Exception) and self._storage_failed(exc, request.kind):
                refused = StorageUnavailable(storage_error(exc) or "disk_full")
                refused.__cause__ = exc
                exc = refused
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
            self._done(inbound)
            return
        written = True
        try:
            written = self._invoke(inbound, msg)
            seconds = self._m_seconds.get(kind)
            if seconds is None:
                seconds = self._m_seconds[kind] = self.metrics.handle_seconds.labels(kind)
            seconds.observe(time.perf_counter() - started)
        finally:
            if written:
                self._done(inbound)
            elif inbound.qos > 0:
                self._parked.append(inbound)  # not acked: retried when the disk takes it

    def _invoke(self, inbound: Inbound, msg: Any) -> bool:
        """Run the handler; False when the disk refused its write (nothing was written)."""
        handler = self.handlers.get(inbound.kind)
        if handler is None:
            self._dead_letter(inbound, DeadLetter(inbound.kind, "handler_error", "no handler"))
            return True
        try:
            handler(msg)
        except DeadLetter as refused:
            self._dead_letter(inbound, refused)
            return True
        except self._rejections as exc:
            logger.debug("%s %s refused: %s", inbound.kind, getattr(msg, "event_id", "?"), exc)
            return True
        except Exception as exc:
            if self._storage_failed(exc, inbound.kind):
                return False
            logger.exception(
                "handler for %s failed on event %s", inbound.kind, getattr(msg, "event_id", "?")
            )
            failure = DeadLetter(
                inbound.kind, "handler_error", type(exc).__name__, getattr(msg, "event_id", None)
            )
            self._dead_letter(inbound, failure, log=False)
            return True
        handled = self._m_handled.get(inbound.kind)
        if handled is None:
            handled = self._m_handled[inbound.kind] = self.metrics.messages_handled.labels(
                inbound.kind
            )
        handled.inc()
        return True

    def _dead_letter(self, inbound: Inbound, dead: DeadLetter, log: bool = True) -> None:
        self.dead_letters.report(inbound, dead, log)

    @property
    def on_dead_letter(self) -> Callable[[Inbound, DeadLetter], None] | None:
        return self.dead_letters.publish

    @on_dead_letter.setter
    def on_dead_letter(self, publish: Callable[[Inbound, DeadLetter], None] | None) -> None:
        self.dead_letters.publish = publish  # late wiring: bridge.publish_dead_letter

    def _done(self, inbound: Inbound) -> None:
        if self.on_done is None:
            return
        if self._flush is not None and inbound.qos > 0:
            self._unacked.append(inbound)  # acked by ``_commit``, after the flush
            return
        self._ack(inbound)

    def _ack(self, inbound: Inbound) -> None:
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
                self._drop_lossy()
                return
            if isinstance(item, _Call) and not item.future.done():
                try:
                    item.future.set_exception(RuntimeError("dispatcher stopped"))
                except Exception:  # cancelled concurrently
                    continue

    def _drop_lossy(self) -> None:
        """QoS 0 deliveries and wake-up tokens left behind at stop (nothing to fail)."""
        for lane in (self._lossy, self._wake):
            while True:
                try:
                    lane.get_nowait()
                except queue.Empty:
                    break
