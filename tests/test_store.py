"""The edge's SQLite store on real files: migrations, every method, idempotence, caps,
erasure, concurrent readers and durability against kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.migrations import LATEST_VERSION, SchemaError, migrate
from edge.store import (
    CatalogItem,
    EdgeStore,
    Offer,
    Profile,
    StoreClosedError,
    StoreInputError,
)
from edge.store_reader import HISTORY_SQL, PROFILE_SQL
from models.transactions import Transaction

REPO = Path(__file__).resolve().parent.parent
ALICE = "m-00000000000a11ce"
BOB = "m-0000000000000b0b"
T0 = 1_800_000_000.0
ALL_CONSENT = {"personalize": True, "staff_display": True, "app_offers": True}


def profile(subject: str, **changes: object) -> Profile:
    fields: dict[str, object] = {
        "subject": subject, "first_name": "Ana", "tier": "gold", "birthday": "1980-02-03",
        "preferences": {"sizes": {"dairy": "large"}, "brands": ["Nordmilk"], "notes": ""},
        "consent": dict(ALL_CONSENT), "home_store": "s1",
    }
    fields.update(changes)
    return Profile(**fields)  # type: ignore[arg-type]


CATALOG = [
    CatalogItem("milk", "Milk 1L", "dairy", 1.2, 10, "dairy"),
    CatalogItem("bread", "Bread", "bakery", 2.5, 1, "bakery"),
    CatalogItem("cola", "Cola", "drinks", 1.0, 0, "drinks"),
]


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore(tmp_path / "edge.db", clock=lambda: T0) as opened:
        opened.upsert_catalog(CATALOG, now=T0)
        opened.upsert_profiles([profile(ALICE), profile(BOB, first_name="Ben")], now=T0)
        yield opened


def table_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT * FROM {table}").fetchall()


# ---------------------------------------------------------------- open, migrate


def test_migrates_empty_file_and_rerun_is_noop(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    with EdgeStore(path) as first:
        assert first.schema_version == LATEST_VERSION
    with EdgeStore(path) as second:
        assert second.schema_version == LATEST_VERSION
    versions = [row[0] for row in table_rows(path, "schema_version")]
    assert versions == list(range(1, LATEST_VERSION + 1))
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"profiles", "purchases", "aggregates", "catalog", "offers", "visits", "impressions",
            "feedback", "processed_events", "seen_tokens", "outbox"} <= tables


def test_migrates_step_by_step_from_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.execute("INSERT INTO catalog VALUES ('x', 'X', NULL, 1.0, 3, NULL, 0)")
    conn.close()
    with EdgeStore(path) as store:
        assert store.schema_version == LATEST_VERSION
        assert [i.product_id for i in store.catalog()] == ["x"]  # data kept across the step
        assert store.outbox_count() == 0  # step 2 tables exist


def test_refuses_a_newer_schema_and_a_non_autocommit_connection(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    EdgeStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
    with pytest.raises(SchemaError, match="newer"):
        EdgeStore(path)
    with pytest.raises(SchemaError, match="isolation_level"):
        migrate(sqlite3.connect(tmp_path / "other.db"))


def test_writer_pragmas_and_readers_are_read_only(store: EdgeStore) -> None:
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    with pytest.raises(sqlite3.OperationalError):
        store.reader()._conn.execute("DELETE FROM profiles")


def test_hot_queries_use_indexes(store: EdgeStore) -> None:
    conn = store.reader()._conn
    for sql in (PROFILE_SQL, HISTORY_SQL):
        plan = " ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, ("x",)))
        assert "SCAN" not in plan and ("INDEX" in plan or "PRIMARY KEY" in plan), plan


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge.db")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosedError):
        store.get_profile(ALICE)
    with pytest.raises(StoreClosedError):
        store.mark_processed("e1", "checkin", T0)


# ---------------------------------------------------------------- profiles, history


def test_profiles_round_trip_update_and_validation(store: EdgeStore) -> None:
    assert store.get_profile(ALICE) == profile(ALICE)
    assert store.get_profile("m-unknown") is None
    store.upsert_profiles([profile(ALICE, tier="silver", consent={"personalize": False})])
    updated = store.get_profile(ALICE)
    assert updated is not None and updated.tier == "silver"
    assert not updated.consents("personalize") and not updated.consents("app_offers")
    with pytest.raises(StoreInputError) as bad:
        store.upsert_profiles([profile(BOB, consent={"marketing": True})])
    assert bad.value.reason == "bad_consent"
    with pytest.raises(StoreInputError):
        store.upsert_profiles([profile(BOB, consent={"personalize": "yes"})])
    assert store.get_profile(BOB) == profile(BOB, first_name="Ben")  # nothing half-written


def test_replace_history_and_purchase_history_keeps_last_baskets(store: EdgeStore) -> None:
    rows = [
        Transaction(ALICE, f"b{day}", T0 - (10 - day) * 86_400, pid, 2.0, 1.5, "dairy")
        for day in range(10) for pid in ("milk", "bread")
    ]
    assert store.replace_history(rows, now=T0) == 20
    assert store.replace_history(rows, now=T0) == 20  # replaced, not appended
    history = store.purchase_history(ALICE, max_baskets=3)
    assert [t.basket_id for t in history] == ["b7", "b7", "b8", "b8", "b9", "b9"]
    assert all(isinstance(t, Transaction) and t.customer_id == ALICE for t in history)
    assert history[-1].timestamp == T0 - 86_400 and history[0].price == 1.5
    assert len(store.purchase_history(ALICE)) == 20
    assert store.purchase_history(ALICE, max_baskets=0) == []
    assert store.purchase_history(BOB) == []
    aggregates = store.get_aggregates(ALICE)
    assert aggregates is not None
    assert (aggregates.baskets, aggregates.total_spend) == (10, 60.0)
    assert aggregates.last_purchase_ts == T0 - 86_400 and aggregates.mean_basket_spend == 6.0
    assert len(store.all_purchases()) == 20
    assert len(store.all_purchases(since_ts=T0 - 2 * 86_400)) == 4  # b8 (at the bound), b9


# ---------------------------------------------------------------- catalog, offers


def test_catalog_version_changes_only_when_catalog_changes(store: EdgeStore) -> None:
    assert [i.product_id for i in store.catalog()] == ["bread", "cola", "milk"]
    version = store.catalog_version()
    store.upsert_catalog(CATALOG, now=T0 + 5)  # same content, newer stamp
    assert store.catalog_version() == version
    store.upsert_catalog([CatalogItem("milk", "Milk 1L", "dairy", 1.3, 10, "dairy")])
    assert store.catalog_version() > version
    assert {i.product_id: i.price for i in store.catalog()}["milk"] == 1.3
    with pytest.raises(StoreInputError):
        store.upsert_catalog([CatalogItem("x", "X", None, -1.0, 1, None)])
    with pytest.raises(StoreInputError):
        store.upsert_catalog([CatalogItem("x", "X", None, 1.0, -1, None)])


def test_active_offers_window(store: EdgeStore) -> None:
    store.upsert_offers([
        Offer("o1", "milk", None, 10.0, T0, T0 + 100),
        Offer("o2", None, "bakery", 5.0, T0 + 50, T0 + 60),
    ])
    assert [o.offer_id for o in store.active_offers(T0 + 55)] == ["o1", "o2"]
    assert [o.offer_id for o in store.active_offers(T0 + 70)] == ["o1"]
    assert store.active_offers(T0 + 100) == []
    with pytest.raises(StoreInputError):
        store.upsert_offers([Offer("o3", None, None, 5.0, T0, T0 + 1)])


# ---------------------------------------------------------------- events


def test_pos_basket_applies_once_with_every_effect(store: EdgeStore) -> None:
    version = store.catalog_version()
    lines = [("milk", 3.0, None), ("bread", 2.0, 2.0), ("unknown", 1.0, 4.0)]
    payload = {"basket_id": "B1", "lines": 3}
    for _ in range(2):  # redelivery: second time nothing changes
        applied = store.apply_pos_basket("pos-1", basket_id="B1", subject=ALICE, ts=T0,
                                         lines=lines, payload=payload)
        assert applied is (_ == 0)
    assert store.is_processed("pos-1")
    history = store.purchase_history(ALICE)
    assert [(t.product_id, t.quantity, t.price, t.category) for t in history] == [
        ("milk", 3.0, 1.2, "dairy"), ("bread", 2.0, 2.0, "bakery"), ("unknown", 1.0, 4.0, None)
    ]
    aggregates = store.get_aggregates(ALICE)
    assert aggregates is not None and aggregates.baskets == 1
    assert aggregates.total_spend == pytest.approx(3 * 1.2 + 2 * 2.0 + 4.0)
    stock = {i.product_id: i.stock for i in store.catalog()}
    assert stock == {"milk": 7, "bread": 0, "cola": 0}  # bread 1 - 2 stops at 0
    assert store.catalog_version() > version
    [event] = store.outbox_pending()
    assert (event.event_id, event.kind, event.payload) == ("pos-1", "pos_basket", payload)


def test_anonymous_basket_feeds_item_stats_only(store: EdgeStore) -> None:
    assert store.apply_pos_basket("pos-2", basket_id="B2", subject=None, ts=T0,
                                  lines=[("milk", 1.0, None)], payload={})
    [line] = store.all_purchases()
    assert line.customer_id == "anon:B2"
    assert store.get_aggregates(ALICE) is None


@pytest.mark.parametrize(
    "lines",
    [[], [("milk", float("nan"), None)], [("", 1.0, None)], [("milk", 1.0, -2.0)],
     [("milk", "2", None)], [("milk", 1.0)]],
)
def test_bad_basket_is_refused_without_effect(store: EdgeStore, lines: list) -> None:
    with pytest.raises(StoreInputError) as refused:
        store.apply_pos_basket("pos-bad", basket_id="B", subject=ALICE, ts=T0, lines=lines,
                               payload={})
    assert refused.value.reason == "bad_basket"
    assert not store.is_processed("pos-bad") and store.outbox_count() == 0


def test_unserialisable_payload_is_refused(store: EdgeStore) -> None:
    with pytest.raises(StoreInputError) as refused:
        store.apply_pos_basket("pos-x", basket_id="B", subject=ALICE, ts=T0,
                               lines=[("milk", 1.0, None)], payload={"when": object()})
    assert refused.value.reason == "bad_payload" and not store.is_processed("pos-x")


def test_feedback_is_idempotent_and_queued(store: EdgeStore) -> None:
    kwargs = dict(subject=ALICE, visit_id="v1", product_id="milk", action="accepted",
                  channel="staff", ts=T0, payload={"a": 1})
    assert store.record_feedback("fb-1", **kwargs)  # type: ignore[arg-type]
    assert not store.record_feedback("fb-1", **kwargs)  # type: ignore[arg-type]
    assert len(table_rows(store.path, "feedback")) == 1
    assert [(e.event_id, e.kind) for e in store.outbox_pending()] == [("fb-1", "feedback")]
    with pytest.raises(StoreInputError) as refused:
        store.record_feedback("fb-2", **{**kwargs, "channel": "email"})  # type: ignore[arg-type]
    assert refused.value.reason == "bad_channel"


def test_impressions_logged_once_with_one_outbox_event(store: EdgeStore) -> None:
    items = [("milk", 1, 0.9, 0.8, [{"kind": "history", "text": "bought 4 times"}]),
             ("bread", 2, 0.5, 0.4, [])]
    for _ in range(2):
        store.log_impressions("rec-1", visit_id="v1", subject=ALICE, channel="staff", ts=T0,
                              items=items)
    shown = store.visit_impressions("v1")
    assert [(i.product_id, i.rank, i.reasons) for i in shown] == [
        ("milk", 1, [{"kind": "history", "text": "bought 4 times"}]), ("bread", 2, [])]
    [event] = store.outbox_pending()
    assert event.kind == "recommendation" and event.payload["subject"] == ALICE
    assert [i["product_id"] for i in event.payload["items"]] == ["milk", "bread"]


def test_cap_counts_across_channels_with_dismiss(store: EdgeStore) -> None:
    day = T0 - 3600
    store.log_impressions("r1", visit_id="v1", subject=ALICE, channel="staff", ts=T0,
                          items=[("milk", 1, 1, 1, []), ("bread", 2, 1, 1, [])])
    store.log_impressions("r2", visit_id="v1", subject=ALICE, channel="app", ts=T0 + 1,
                          items=[("milk", 1, 1, 1, [])])
    store.log_impressions("r0", visit_id="v0", subject=ALICE, channel="app", ts=day - 10,
                          items=[("cola", 1, 1, 1, [])])  # yesterday's visit
    store.log_impressions("r3", visit_id="v9", subject=BOB, channel="app", ts=T0,
                          items=[("milk", 1, 1, 1, [])])
    store.record_feedback("f1", subject=ALICE, visit_id="v1", product_id="bread",
                          action="dismissed", channel="staff", ts=T0 + 2, payload={})
    store.record_feedback("f2", subject=ALICE, visit_id="v1", product_id="milk",
                          action="dismissed", channel="app", ts=T0 + 2, payload={})  # not staff
    counts = store.cap_counts(ALICE, "v1", day)
    assert counts.shown_in_visit == {"milk": 2, "bread": 2}
    assert counts.dismissed_in_visit == frozenset({"bread"})
    assert counts.impressions_today == 4  # 3 shown + 1 staff dismiss
    assert counts.app_offers_today == 1 and counts.app_offers_in_visit == 1
    fresh = store.cap_counts(ALICE, "v2", T0 + 10)
    assert (fresh.shown_in_visit, fresh.impressions_today, fresh.app_offers_today) == ({}, 0, 0)


def test_visits_tokens_and_processed_marks(store: EdgeStore) -> None:
    store.save_visit("v1", ALICE, T0, None, None, 0.5, False)
    store.save_visit("v1", ALICE, T0, T0 + 60, "dairy", 0.9, True)
    visit = store.visit("v1")
    assert visit is not None and (visit.ended_at, visit.zone, visit.checked_in) == (
        T0 + 60, "dairy", True)
    assert store.visit("nope") is None
    assert store.remember_token("jti-1", T0 + 60) and not store.remember_token("jti-1", T0 + 60)
    assert store.remember_token("jti-2", T0 + 5)
    assert store.live_tokens(T0 + 10) == [("jti-1", T0 + 60)]
    assert store.purge_tokens(T0 + 10) == 1 and store.live_tokens(T0) == [("jti-1", T0 + 60)]
    assert store.mark_processed("c1", "checkin", T0) and not store.mark_processed("c1", "x", T0)
    assert store.is_processed("c1") and not store.is_processed("c2")
    assert store.purge_processed(T0 + 1) == 1 and not store.is_processed("c1")


def test_outbox_queue_ack_and_count(store: EdgeStore) -> None:
    for n in range(5):
        assert store.enqueue_outbox(f"e{n}", "status", {"n": n})
    assert not store.enqueue_outbox("e0", "status", {"n": 99})
    pending = store.outbox_pending(limit=3)
    assert [e.payload["n"] for e in pending] == [0, 1, 2] and pending[0].created_at == T0
    assert store.outbox_ack([e.seq for e in pending] + [12345]) == 3
    assert store.outbox_count() == 2
    assert [e.event_id for e in store.outbox_pending()] == ["e3", "e4"]


def test_failed_transaction_rolls_back_and_store_stays_usable(store: EdgeStore) -> None:
    with pytest.raises(RuntimeError), store._write() as conn:
        conn.execute("INSERT INTO seen_tokens VALUES ('half', 1)")
        raise RuntimeError("crash mid-transaction")
    assert store.live_tokens(0) == []
    assert store.remember_token("half", 1) and store.live_tokens(0) == [("half", 1)]


# ---------------------------------------------------------------- erasure


def test_erasure_removes_every_trace_of_the_subject(store: EdgeStore) -> None:
    store.replace_history([Transaction(ALICE, "h1", T0 - 86_400, "milk", 1.0, 1.2, "dairy"),
                           Transaction(BOB, "h2", T0 - 86_400, "milk", 1.0, 1.2, "dairy")])
    store.apply_pos_basket("p1", basket_id="B1", subject=ALICE, ts=T0,
                           lines=[("milk", 1.0, None)], payload={"subject": ALICE})
    store.record_feedback("f1", subject=ALICE, visit_id="v1", product_id="milk",
                          action="dismissed", channel="staff", ts=T0, payload={"s": ALICE})
    store.log_impressions("r1", visit_id="v1", subject=ALICE, channel="staff", ts=T0,
                          items=[("milk", 1, 1, 1, [])])
    store.save_visit("v1", ALICE, T0, None, None, 0.5, True)
    store.enqueue_outbox("bob-1", "status", {"s": BOB}, subject=BOB)
    store.get_profile(ALICE)  # a reader is open while erasing

    store.delete_member(ALICE)

    assert store.get_profile(ALICE) is None and store.purchase_history(ALICE) == []
    assert store.get_aggregates(ALICE) is None and store.visit("v1") is None
    assert store.cap_counts(ALICE, "v1", 0).shown_in_visit == {}
    assert [e.event_id for e in store.outbox_pending()] == ["bob-1"]
    assert store.get_profile(BOB) is not None and len(store.purchase_history(BOB)) == 1
    with sqlite3.connect(store.path) as conn:
        dump = "\n".join(conn.iterdump())
    assert ALICE not in dump and BOB in dump
    raw = b"".join(p.read_bytes() for p in store.path.parent.glob("edge.db*"))
    assert ALICE.encode() not in raw  # not in free pages or the WAL either


# ---------------------------------------------------------------- concurrency, durability


def test_reader_threads_see_commits_with_own_connections(store: EdgeStore) -> None:
    seen: dict[str, object] = {}
    stop = threading.Event()

    def http_thread(name: str) -> None:
        reader = store.reader()
        assert store.reader() is reader
        seen[name] = reader
        while not stop.is_set():
            if store.is_processed("last"):
                seen[name + "-done"] = store.outbox_count()
                return

    threads = [threading.Thread(target=http_thread, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for n in range(50):
        store.enqueue_outbox(f"e{n}", "status", {})
    store.mark_processed("last", "test", T0)
    for t in threads:
        t.join(timeout=10)
    stop.set()
    assert [seen[f"t{i}-done"] for i in range(3)] == [50, 50, 50]
    assert len({id(seen[f"t{i}"]) for i in range(3)} | {id(store.reader())}) == 4


CHILD = textwrap.dedent(
    """
    import sys
    from edge.store import EdgeStore
    store = EdgeStore(sys.argv[1])
    n = 0
    while True:
        store.enqueue_outbox(f"ev-{n}", "pos_basket", {"n": n, "pad": "x" * 300})
        print(n, flush=True)  # acknowledged only after the commit returned
        n += 1
    """
)


def test_committed_outbox_rows_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "edge.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    acked = -1
    try:
        assert child.stdout is not None
        for line in child.stdout:  # blocks on the child's output, no sleeping
            acked = int(line)
            if acked >= 1500:  # past the 1000-page auto-checkpoint, still mid-stream
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL and acked >= 1500
    with EdgeStore(path) as reopened:
        ids = {e.event_id for e in reopened.outbox_pending(limit=1_000_000)}
        assert {f"ev-{n}" for n in range(acked + 1)} <= ids
        assert reopened.outbox_count() == len(ids)


def test_accept_checkin_records_event_and_token_once(store: EdgeStore) -> None:
    assert store.accept_checkin("c1", "jti-1", T0 + 300, T0) is True
    assert store.accept_checkin("c1", "jti-1", T0 + 300, T0) is False  # redelivered
    assert store.is_processed("c1")
    assert ("jti-1", T0 + 300) in store.live_tokens(T0)
    assert store.live_tokens(T0 + 301) == []
