"""The single worker: order, dead letters, acks either way, bounded lossy intake, calls."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edge.dispatch import Dispatcher, QueueFull
from edge.messages import DeadLetter, GeofenceMsg, Inbound, receive_maximum_for
from edge.metrics import EdgeMetrics
from edge.probe import wait_until

TS = 1_780_000_000.0
SUBJECT = "cust-001"
TOPIC = f"storeside/acme/s1/in/app/{SUBJECT}/geofence"


def geofence(event_id: str, qos: int = 1, mid: int = 1, **change: Any) -> Inbound:
    body = {"v": 1, "event_id": event_id, "ts": TS, "subject": SUBJECT, "transition": "enter"}
    body.update(change)
    return Inbound("geofence", TOPIC, json.dumps(body).encode(), qos, mid, time.monotonic(),
                   SUBJECT)


def raw_inbound(payload: bytes, kind: str = "geofence", qos: int = 1) -> Inbound:
    return Inbound(kind, TOPIC, payload, qos, 7, time.monotonic(), SUBJECT)



def counter(metrics: EdgeMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


class Recorder:
    """Handler + on_done that remember what happened and on which thread."""

    def __init__(self) -> None:
        self.handled: list[Any] = []
        self.done: list[Inbound] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def handle(self, msg: Any) -> str:
        with self.lock:
            self.handled.append(msg)
            self.threads.add(threading.get_ident())
        return f"ok:{getattr(msg, 'event_id', msg)}"

    def ack(self, inbound: Inbound) -> None:
        with self.lock:
            self.done.append(inbound)


@pytest.fixture()
def rec() -> Recorder:
    return Recorder()


@pytest.fixture()
def metrics() -> EdgeMetrics:
    return EdgeMetrics()


@pytest.fixture()
def running(rec: Recorder, metrics: EdgeMetrics) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher({"geofence": rec.handle}, metrics=metrics, on_done=rec.ack,
                            queue_size=100, reserved=10)
    dispatcher.start()
    yield dispatcher
    dispatcher.stop(drain=False)


def test_items_are_handled_in_order_on_one_thread_and_acked(
    running: Dispatcher, rec: Recorder, metrics: EdgeMetrics
) -> None:
    items = [geofence(f"e{i}", mid=i) for i in range(50)]
    assert all(running.offer(item) for item in items)
    wait_until(lambda: len(rec.done) == 50)
    assert [m.event_id for m in rec.handled] == [f"e{i}" for i in range(50)]
    assert all(isinstance(m, GeofenceMsg) for m in rec.handled)
    assert rec.done == items
    assert rec.threads == {running._thread.ident}  # type: ignore[union-attr]
    assert counter(metrics, "storeside_messages_handled_total", kind="geofence") == 50
    assert counter(metrics, "storeside_handle_seconds_count", kind="geofence") == 50


BAD = [
    (b"{not json", "bad_json"),
    (b"\xff\xfe", "bad_utf8"),
    (b"[]", "not_object"),
    (json.dumps({"v": 9, "event_id": "x"}).encode(), "schema_version"),
    (json.dumps({"v": 1, "event_id": "x", "ts": "soon", "subject": SUBJECT,
                 "transition": "enter"}).encode(), "invalid"),
    (b"{" + b" " * 20_000 + b"}", "too_large"),
]


def test_dead_letters_are_counted_acked_and_the_worker_goes_on(
    running: Dispatcher, rec: Recorder, metrics: EdgeMetrics
) -> None:
    seen: list[tuple[Inbound, DeadLetter]] = []
    running.on_dead_letter = lambda inbound, dead: seen.append((inbound, dead))
    bad = [raw_inbound(payload) for payload, _ in BAD]
    for item in bad:
        running.offer(item)
    running.offer(geofence("after"))
    wait_until(lambda: len(rec.done) == len(BAD) + 1)
    assert [m.event_id for m in rec.handled] == ["after"]
    assert rec.done[: len(bad)] == bad  # acked although refused: no poison loop
    for _, reason in BAD:
        assert counter(metrics, "storeside_dead_letters_total", kind="geofence",
                       reason=reason) == 1, reason
    assert [dead.reason for _, dead in seen] == [reason for _, reason in BAD]


def test_dead_letter_log_shows_at_most_64_payload_bytes(
    running: Dispatcher, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    secret_tail = b"Alice-Smith-born-1990"
    payload = b"{" + b"x" * 70 + secret_tail
    with caplog.at_level(logging.WARNING, logger="edge.dead_letters"):
        running.offer(raw_inbound(payload))
        running.offer(raw_inbound(json.dumps({"v": 1, "event_id": "e", "ts": TS,
                                              "subject": "Alice Smith",
                                              "transition": "enter"}).encode()))
        wait_until(lambda: len(rec.done) == 2)
    text = caplog.text
    assert "reason=bad_json" in text and "reason=invalid" in text
    assert "Alice" not in text
    assert "a" * 63 in text  # the 64-byte head's shape (letters as a) is there for debugging


def test_handler_errors_are_logged_counted_acked_and_survived(
    metrics: EdgeMetrics, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    def flaky(msg: GeofenceMsg) -> None:
        if msg.event_id == "boom":
            raise RuntimeError("disk on fire")
        rec.handle(msg)

    dispatcher = Dispatcher({"geofence": flaky}, metrics=metrics, on_done=rec.ack)
    dispatcher.start()
    try:
        with caplog.at_level(logging.ERROR, logger="edge.dispatch"):
            for event_id in ("a", "boom", "b"):
                dispatcher.offer(geofence(event_id))
            wait_until(lambda: len(rec.done) == 3)
    finally:
        dispatcher.stop()
    assert [m.event_id for m in rec.handled] == ["a", "b"]
    assert counter(metrics, "storeside_dead_letters_total", kind="geofence",
                   reason="handler_error") == 1
    assert "Traceback" in caplog.text and "disk on fire" in caplog.text


def test_expected_refusals_are_not_dead_letters(metrics: EdgeMetrics, rec: Recorder) -> None:
    class Refused(Exception):
        pass

    def refuse(msg: GeofenceMsg) -> None:
        if msg.event_id == "dl":
            raise DeadLetter("geofence", "subject_mismatch", "handler says so")
        raise Refused("token expired")

    dispatcher = Dispatcher({"geofence": refuse}, metrics=metrics, on_done=rec.ack,
                            rejections=(Refused,))
    dispatcher.start()
    try:
        dispatcher.offer(geofence("r"))
        dispatcher.offer(geofence("dl"))
        wait_until(lambda: len(rec.done) == 2)
    finally:
        dispatcher.stop()
    assert counter(metrics, "storeside_dead_letters_total", kind="geofence",
                   reason="handler_error") == 0
    assert counter(metrics, "storeside_dead_letters_total", kind="geofence",
                   reason="subject_mismatch") == 1


def test_qos0_has_a_lower_limit_so_reserved_slots_stay_free_for_qos1(
    metrics: EdgeMetrics, rec: Recorder
) -> None:
    dispatcher = Dispatcher({"geofence": rec.handle}, metrics=metrics, on_done=rec.ack,
                            queue_size=10, reserved=4)
    lossy = [dispatcher.offer(geofence(f"b{i}", qos=0)) for i in range(8)]
    assert lossy == [True] * 6 + [False] * 2
    acked = [dispatcher.offer(geofence(f"g{i}", qos=1)) for i in range(5)]
    assert acked == [True] * 4 + [False]
    assert dispatcher.depth == 10
    assert counter(metrics, "storeside_queue_depth") == 10
    dispatcher.start()
    try:
        wait_until(lambda: len(rec.done) == 10)
        assert dispatcher.depth == 0
    finally:
        dispatcher.stop()


def test_reserve_must_leave_room(metrics: EdgeMetrics) -> None:
    with pytest.raises(ValueError, match="reserved"):
        Dispatcher({}, metrics=metrics, queue_size=100, reserved=100)


def test_default_reserve_matches_the_receive_maximum_the_bridge_announces(
    metrics: EdgeMetrics,
) -> None:
    assert Dispatcher({}, metrics=metrics).reserved == receive_maximum_for(10_000) == 1_000
    assert Dispatcher({}, metrics=metrics, queue_size=10).reserved == receive_maximum_for(10)
    assert receive_maximum_for(10) == 5


def test_call_runs_on_the_worker_and_returns_or_raises(
    running: Dispatcher, rec: Recorder
) -> None:
    assert running.call("geofence", "kiosk-1") == "ok:kiosk-1"
    assert rec.threads == {running._thread.ident}  # type: ignore[union-attr]

    def explode(item: Any) -> None:
        raise LookupError(item)

    running.handlers["explode"] = explode
    with pytest.raises(LookupError, match="x"):
        running.call("explode", "x")
    with pytest.raises(KeyError):
        running.call("no-such-kind", 1)
    running.offer(geofence("still-alive"))
    wait_until(lambda: any(getattr(m, "event_id", "") == "still-alive" for m in rec.handled))


def test_call_times_out_and_is_cancelled_when_the_worker_is_busy(
    metrics: EdgeMetrics,
) -> None:
    release = threading.Event()
    ran: list[str] = []

    def slow(item: str) -> None:
        ran.append(item)
        if item == "block":
            release.wait(5)

    dispatcher = Dispatcher({"slow": slow}, metrics=metrics)
    dispatcher.start()
    try:
        blocker = threading.Thread(target=dispatcher.call, args=("slow", "block"))
        blocker.start()
        wait_until(lambda: ran == ["block"])
        with pytest.raises(TimeoutError):
            dispatcher.call("slow", "late", timeout=0.05)
        release.set()
        blocker.join(5)
        assert dispatcher.call("slow", "next") is None
        assert ran == ["block", "next"]  # "late" was cancelled, never run
    finally:
        release.set()
        dispatcher.stop()


def test_call_refuses_when_full_or_stopped(metrics: EdgeMetrics) -> None:
    busy, release = threading.Event(), threading.Event()

    def block(item: int) -> None:
        busy.set()
        release.wait(5)

    dispatcher = Dispatcher({"k": block}, metrics=metrics, queue_size=3, reserved=1)
    with pytest.raises(RuntimeError, match="not running"):
        dispatcher.call("k", 0)
    dispatcher.start()
    holder = threading.Thread(target=dispatcher.call, args=("k", 0))
    holder.start()
    try:
        busy.wait(5)
        assert all(dispatcher.offer(geofence(f"g{i}", qos=1)) for i in range(3))
        with pytest.raises(QueueFull):
            dispatcher.call("k", 1)
    finally:
        release.set()
        holder.join(5)
        dispatcher.stop()


def test_tick_runs_periodically_on_the_worker_and_survives_errors(
    metrics: EdgeMetrics, rec: Recorder
) -> None:
    ticks: list[int] = []
    calls = {"n": 0}

    def tick() -> None:
        calls["n"] += 1
        ticks.append(threading.get_ident())
        if calls["n"] == 2:
            raise RuntimeError("timer bug")

    dispatcher = Dispatcher({"geofence": rec.handle}, metrics=metrics, tick=tick,
                            tick_interval_s=0.01)
    dispatcher.start()
    try:
        wait_until(lambda: calls["n"] >= 5)
        dispatcher.offer(geofence("between-ticks"))
        wait_until(lambda: rec.handled)
        assert set(ticks) == {dispatcher._thread.ident}  # type: ignore[union-attr]
    finally:
        dispatcher.stop()


def test_stop_drains_by_default_and_abandons_otherwise(metrics: EdgeMetrics) -> None:
    for drain, expected in ((True, 20), (False, 0)):
        rec = Recorder()
        gate = threading.Event()

        def handle(msg: Any, rec: Recorder = rec, gate: threading.Event = gate) -> None:
            gate.wait(5)
            rec.handle(msg)

        dispatcher = Dispatcher({"geofence": handle}, metrics=EdgeMetrics(),
                                on_done=rec.ack)
        for i in range(20):
            dispatcher.offer(geofence(f"e{i}"))
        dispatcher.start()
        if drain:
            gate.set()
            dispatcher.stop(drain=True)
        else:
            wait_until(lambda d=dispatcher: d.depth == 19)  # worker holds e0
            stopper = threading.Thread(target=dispatcher.stop, kwargs={"drain": False})
            stopper.start()
            wait_until(lambda d=dispatcher: d._abandon)
            gate.set()
            stopper.join(5)
            expected = 1  # the item in hand is finished and acked, the rest is not
        assert len(rec.done) == expected
        assert not dispatcher.running
