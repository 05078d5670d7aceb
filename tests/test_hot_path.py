"""The check-in hot path's shortcuts keep what the long way guaranteed.

Item feature columns cached per minute and tokens verified without PyJWT's generic path give
exactly what the plain computation gives; the worker takes QoS 1 events before queued
beacons and acks them only after the flush of the rows they deferred. (The end-to-end
guarantees are tested where they live: tests/test_tokens.py, tests/test_edge_e2e.py,
tests/test_edge_restart.py.)
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import numpy as np
import pytest

from edge.dispatch import Dispatcher
from edge.messages import Inbound
from edge.metrics import EdgeMetrics
from edge.probe import wait_until
from edge.ranking import Ranker
from edge.store import CatalogItem
from edge.tokens import TokenRejected, TokenVerifier
from hub.tokens import SCOPES, generate_signing_key, mint_checkin_token, private_key_pem
from hub.tokens import public_key_pem as public_pem
from models.features import Context, CustomerHistory, build_features, item_features
from models.item_stats import DAY
from tests.synthetic_env import synthetic_fixtures

rows, stats = synthetic_fixtures(customers=40, products=60, days=40, seed=5)


def test_cached_item_columns_give_the_same_features(rows, stats) -> None:
    products = [*sorted({r.product_id for r in rows}), "never-sold"]
    ctx = Context(timestamp=stats.last_ts + DAY, store_id="S0", utc_offset_s=3600)
    items = item_features(products, stats, ctx, "S0")
    for customer in sorted({r.customer_id for r in rows})[:5]:
        history = CustomerHistory.from_transactions(
            [r for r in rows if r.customer_id == customer])
        plain = build_features(history, products, stats, ctx)
        np.testing.assert_array_equal(build_features(history, products, stats, ctx, items),
                                      plain)
    empty = CustomerHistory.from_transactions([])
    np.testing.assert_array_equal(build_features(empty, products, stats, ctx, items),
                                  build_features(empty, products, stats, ctx))
    assert not items.base.flags.writeable  # shared between visits: never written to


def test_ranker_reuses_item_columns_within_a_minute_only(rows, stats, monkeypatch) -> None:
    ranker = Ranker(EdgeMetrics(), None)
    ranker.refresh_stats(rows, as_of=stats.last_ts)
    catalog = [CatalogItem(pid, pid, "c", 1.0, 5, None) for pid in
               sorted({r.product_id for r in rows})]
    history = CustomerHistory.from_transactions([r for r in rows if r.customer_id == rows[0]
                                                 .customer_id])
    built: list[float] = []
    import edge.ranking as ranking

    real = ranking.item_features

    def counting(ids, st, context, store):  # type: ignore[no-untyped-def]
        built.append(context.timestamp)
        return real(ids, st, context, store)

    monkeypatch.setattr(ranking, "item_features", counting)
    minute = (stats.last_ts // 60 + 10) * 60
    first = ranker.rank(history, catalog, Context(minute + 1, "S0"), 10)
    again = ranker.rank(history, catalog, Context(minute + 59, "S0"), 10)
    assert len(built) == 1 and first.source == again.source == "model"
    ranker.rank(history, catalog, Context(minute + 60, "S0"), 10)  # next minute: rebuilt
    ranker.rank(history, catalog[:-1], Context(minute + 61, "S0"), 10)  # another item list
    ranker.rank(history, catalog[:-1], Context(minute + 62, "S1"), 10)  # another store
    assert len(built) == 4
    # and what it ranks is what the uncached features rank
    plain = Ranker(EdgeMetrics(), None)
    plain.refresh_stats(rows, as_of=stats.last_ts)
    ctx = Context(minute + 59, "S0")
    assert [c.product_id for c in plain.rank(history, catalog, ctx, 10).candidates] == \
        [c.product_id for c in again.candidates]


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_token_with_critical_header_extensions_is_refused() -> None:
    key = generate_signing_key()
    verifier = TokenVerifier({"k1": public_pem(key)}, chain="acme", store="s001")
    token = mint_checkin_token(private_key_pem(key), kid="k1", subject="m-1", chain="acme",
                               store="s001", scopes=SCOPES, now=1_000.0)
    head, body, sig = token.split(".")
    for extra in ({"crit": ["exp"]}, {"b64": False}):
        header = {**json.loads(base64.urlsafe_b64decode(head + "==")), **extra}
        with pytest.raises(TokenRejected) as info:
            verifier.verify(f"{_b64(header)}.{body}.{sig}", 1_000.0)
        assert info.value.reason == "malformed"
    truncated_sig = sig[:-4]
    with pytest.raises(TokenRejected) as info:
        verifier.verify(f"{head}.{body}.{truncated_sig}", 1_000.0)
    assert info.value.reason in ("bad_signature", "malformed")
    assert verifier.verify(token, 1_000.0).subject == "m-1"


# -- the worker: check-ins ahead of beacons, group commit before acks --------------------

def _inbound(kind: str, event_id: str, qos: int, mid: int = 1) -> Inbound:
    body: dict[str, Any] = {"v": 1, "event_id": event_id, "ts": 1_780_000_000.0,
                            "subject": "m-1"}
    if kind == "beacon":
        body.update(zone="dairy", rssi=-60, beacon_id="b1")
    else:
        body.update(transition="enter")
    topic = f"storeside/acme/s1/in/app/m-1/{kind}"
    return Inbound(kind, topic, json.dumps(body).encode(), qos, mid, time.monotonic(), "m-1")


class Journal:
    """Handlers, acks and flushes in the order they happened (one list, one lock)."""

    def __init__(self, flush_gate: threading.Event | None = None) -> None:
        self.log: list[str] = []
        self.lock = threading.Lock()
        self.flush_gate = flush_gate

    def add(self, entry: str) -> None:
        with self.lock:
            self.log.append(entry)

    def handle(self, msg: Any) -> None:
        self.add(f"handle:{msg.event_id}")

    def ack(self, inbound: Inbound) -> None:
        self.add(f"ack:{json.loads(inbound.payload)['event_id']}")

    def flush(self) -> None:
        if self.flush_gate is not None:
            self.flush_gate.wait(5)
        self.add("flush")


def test_qos1_events_are_handled_before_queued_beacons_in_arrival_order() -> None:
    journal = Journal()
    dispatcher = Dispatcher({"geofence": journal.handle, "beacon": journal.handle},
                            metrics=EdgeMetrics(), on_done=journal.ack, queue_size=100,
                            reserved=10)
    for i in range(5):
        assert dispatcher.offer(_inbound("beacon", f"b{i}", qos=0))
    assert dispatcher.offer(_inbound("geofence", "g0", qos=1))
    assert dispatcher.offer(_inbound("geofence", "g1", qos=1))
    assert dispatcher.depth == 7
    dispatcher.start()
    try:
        wait_until(lambda: len([e for e in journal.log if e.startswith("handle")]) == 7)
    finally:
        dispatcher.stop()
    handled = [e.split(":")[1] for e in journal.log if e.startswith("handle")]
    assert handled == ["g0", "g1", "b0", "b1", "b2", "b3", "b4"]


def test_qos1_is_acked_only_after_the_flush_that_follows_its_handling() -> None:
    gate = threading.Event()
    journal = Journal(flush_gate=gate)
    dispatcher = Dispatcher({"geofence": journal.handle, "beacon": journal.handle},
                            metrics=EdgeMetrics(), on_done=journal.ack, queue_size=100,
                            reserved=10, flush=journal.flush, flush_idle_s=0.001)
    dispatcher.start()
    try:
        dispatcher.offer(_inbound("geofence", "g0", qos=1))
        dispatcher.offer(_inbound("beacon", "b0", qos=0))
        wait_until(lambda: "handle:b0" in journal.log)
        assert "ack:g0" not in journal.log  # the flush is held (QoS 0: nothing to wait for)
        gate.set()
        wait_until(lambda: "ack:g0" in journal.log)
        first_flush = journal.log.index("flush")
        assert journal.log.index("handle:g0") < first_flush < journal.log.index("ack:g0")
    finally:
        dispatcher.stop()


def test_a_steady_stream_still_flushes_within_the_max_delay() -> None:
    journal = Journal()
    dispatcher = Dispatcher({"geofence": journal.handle}, metrics=EdgeMetrics(),
                            on_done=journal.ack, queue_size=1000, reserved=100,
                            flush=journal.flush, flush_idle_s=1.0, flush_max_delay_s=0.02)
    dispatcher.start()
    try:
        started = time.monotonic()
        for i in range(40):  # never idle for the 1 s idle delay
            dispatcher.offer(_inbound("geofence", f"g{i}", qos=1, mid=i + 1))
            time.sleep(0.002)  # the load's pace, not synchronisation
        wait_until(lambda: "ack:g0" in journal.log, timeout=1.0)
        assert time.monotonic() - started < 0.5
    finally:
        dispatcher.stop()
    assert sorted(e for e in journal.log if e.startswith("ack")) == sorted(
        f"ack:g{i}" for i in range(40))


def test_stop_writes_and_acks_what_was_handled() -> None:
    journal = Journal()
    dispatcher = Dispatcher({"geofence": journal.handle}, metrics=EdgeMetrics(),
                            on_done=journal.ack, queue_size=100, reserved=10,
                            flush=journal.flush, flush_idle_s=10.0, flush_max_delay_s=10.0)
    for i in range(3):
        dispatcher.offer(_inbound("geofence", f"g{i}", qos=1, mid=i + 1))
    dispatcher.start()
    dispatcher.stop(drain=True)
    assert journal.log[-4:] == ["flush", "ack:g0", "ack:g1", "ack:g2"]


# -- the service: rows deferred past the card, caps still exact ---------------------------

@pytest.fixture()
def service(tmp_path, tafeng_zip):  # type: ignore[no-untyped-def]
    from edge.live import LiveHub
    from edge.rules import RulesConfig
    from edge.seed import seed_store
    from edge.service import EdgeService
    from edge.settings import EdgeSettings, TokenSettings
    from edge.store import EdgeStore
    from edge.visit import VisitTracker

    key = generate_signing_key()
    store = EdgeStore(tmp_path / "edge.db")
    summary = seed_store(store, tafeng_zip, n_products=200, n_members=5, now=time.time())
    settings = EdgeSettings(
        chain="acme", store="s001", db_path=tmp_path / "edge.db",
        tokens=TokenSettings(public_keys_dir=None),
        rules=RulesConfig(quiet_hours=(0, 0), max_item_shows_per_visit=1,
                          max_impressions_per_day=1000),
    )
    metrics = EdgeMetrics()
    published: list[tuple[str, dict[str, Any]]] = []
    svc = EdgeService(
        settings, store=store, ranker=Ranker(metrics, None),
        verifier=TokenVerifier({"k1": public_pem(key)}, chain="acme", store="s001"),
        tracker=VisitTracker(settings.visit), live=LiveHub(metrics), metrics=metrics,
        publish=lambda topic, payload, qos, retain: published.append((topic, payload)),
    )
    svc.refresh_stats(time.time())
    svc.test_key, svc.test_subjects, svc.test_published = key, summary.subjects, published
    yield svc
    store.close()


def _checkin(svc: Any, subject: str) -> Any:
    from edge.messages import parse_inbound

    token = mint_checkin_token(private_key_pem(svc.test_key), kid="k1", subject=subject,
                               chain="acme", store="s001", scopes=SCOPES, ttl_s=300)
    payload = json.dumps({"v": 1, "event_id": f"e-{time.monotonic_ns()}", "ts": time.time(),
                          "token": token}).encode()
    return svc.on_checkin(parse_inbound("checkin", payload, subject=subject))


def test_checkin_visit_row_is_durable_with_the_token_and_impressions_follow(service) -> None:
    subject = service.test_subjects[0]
    result = _checkin(service, subject)
    assert result.card is not None and service.test_published
    # the visit row came with the token id, before the card; the impressions are deferred
    assert service.store.visit(result.visit_id).checked_in
    assert service.deferred.pending
    assert service.store.visit_impressions(result.visit_id) == []
    service.flush()
    assert not service.deferred.pending
    shown = {i.product_id for i in service.store.visit_impressions(result.visit_id)
             if i.channel == "staff"}
    assert shown == {s["product_id"] for s in result.card["suggestions"]}


def test_caps_count_impressions_still_deferred(service) -> None:
    """max_item_shows_per_visit=1: a second ranking right after the first (no flush by the
    dispatcher in between) must not show any item again."""
    subject = service.test_subjects[1]
    result = _checkin(service, subject)
    first = {s["product_id"] for s in result.card["suggestions"]}
    assert service.deferred.pending
    visit = service.tracker.get(subject)
    again = service.recommend(visit, "refresh", time.time(), zone=None)
    assert first and not first & {s.product_id for s in again.staff}
    capped = {p for p, rule in again.dropped.items() if rule == "shown_cap"}
    assert capped and capped <= first


# -- WAL checkpoints off the worker --------------------------------------------------------

def test_wal_checkpointer_keeps_the_wal_small_and_leaves_erasure_its_truncate(tmp_path) -> None:
    from edge.store import EdgeStore
    from edge.store_events import ImpressionLog
    from edge.wal_checkpointer import WalCheckpointer

    store = EdgeStore(tmp_path / "edge.db")
    wal = tmp_path / "edge.db-wal"
    checkpointer = WalCheckpointer(store, interval_s=0.01, safety_pages=50_000).start()
    try:
        with store.write() as conn:
            assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 50_000
        reasons = [{"kind": "popular", "text": "x" * 500}]
        for i in range(300):  # ~2 pages each: far past SQLite's own 1,000-page line
            items = [(f"p{j}", j, 0.5, 0.1, reasons) for j in range(5)]
            store.write_behind([ImpressionLog(f"e{i}", "v1", "m-1", "staff", 1.0, items)], ())
            if i % 50 == 0:
                wait_until(lambda n=checkpointer.checkpoints: checkpointer.checkpoints > n)
        wait_until(lambda: checkpointer.checkpoints > 3)
        assert len(store.visit_impressions("v1")) == 1500
        store.delete_member("m-1")  # checkpoints with TRUNCATE beside the running thread
        assert wal.stat().st_size == 0
        assert store.visit_impressions("v1") == []
    finally:
        checkpointer.stop()
    with store.write() as conn:  # SQLite's default again once nobody checkpoints for it
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    store.close()


def test_caps_query_uses_indexes_only(tmp_path) -> None:
    from edge.store import EdgeStore
    from edge.store_reader import CAPS_SQL

    store = EdgeStore(tmp_path / "edge.db")
    try:
        with store.write() as conn:
            params = {"visit": "v", "subject": "m", "since": 0.0, "dismissed": "dismissed"}
            plan = [str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + CAPS_SQL, params)]
        assert not [step for step in plan if step.startswith("SCAN")], plan
        assert sum("USING INDEX" in step for step in plan) == 4, plan
    finally:
        store.close()


def test_published_json_is_what_json_would_write_and_always_valid() -> None:
    from edge.mqtt import _encode

    card = {"v": 1, "subject": "m-1", "name": "Crème brûlée", "score": 0.12345, "n": 3,
            "reasons": [{"kind": "popular", "personal": False}], "zone": None,
            "scopes": ("personalize",)}
    assert json.loads(_encode(card)) == json.loads(json.dumps(card))
    assert _encode(card) == json.dumps(card, separators=(",", ":"),
                                       ensure_ascii=False).encode("utf-8")
    assert json.loads(_encode({"score": float("nan")})) == {"score": None}  # RFC JSON
    assert json.loads(_encode({1: "int keys go through json"})) == {"1": "int keys go through json"}
    assert _encode(b'{"raw": true}') == b'{"raw": true}'


def test_a_check_in_waits_for_one_tick_function_not_the_whole_round() -> None:
    journal = Journal()
    first_running, release = threading.Event(), threading.Event()

    def slow_tick() -> None:
        first_running.set()
        release.wait(5)
        journal.add("tick:first")

    dispatcher = Dispatcher({"geofence": journal.handle}, metrics=EdgeMetrics(),
                            on_done=journal.ack, queue_size=100, reserved=10,
                            tick=slow_tick, tick_interval_s=0.5)
    dispatcher.add_tick(lambda: journal.add("tick:second"))
    dispatcher.start()
    try:
        assert first_running.wait(5)
        dispatcher.offer(_inbound("geofence", "g0", qos=1))
        release.set()
        wait_until(lambda: "tick:second" in journal.log)
        log = journal.log
        assert log.index("tick:first") < log.index("handle:g0") < log.index("tick:second")
    finally:
        dispatcher.stop()
