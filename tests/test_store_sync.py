"""Sync writes of the edge store (edge.store_sync) on a real SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.store import EdgeStore
from edge.store_sync import SyncReader
from edge.sync_items import CatalogUpsert, HistoryLine, OfferUpsert, ProfileUpsert, Removal


def upsert(subject: str, *, baskets: int = 1, history: tuple[HistoryLine, ...] | None = None,
           name: str = "Ana") -> ProfileUpsert:
    lines = history if history is not None else (
        HistoryLine("hub-b1", 100.0, "p1", 2.0, 1.5, "tea"),
    )
    return ProfileUpsert(
        subject=subject, first_name=name, tier="gold", birthday=None, preferences={},
        consent={"personalize": True, "staff_display": True, "app_offers": False},
        home_store="s1", baskets=baskets, total_spend=3.0, last_purchase_ts=100.0,
        history=lines,
    )


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore(tmp_path / "edge.db") as opened:
        yield opened


def test_profile_page_replaces_profile_history_aggregates_and_saves_the_cursor(
    store: EdgeStore,
) -> None:
    store.apply_profile_page([upsert("m-01"), upsert("m-02")], [], cursor="7", done_at=50.0,
                             now=50.0)
    store.apply_profile_page([upsert("m-01", name="Anna", baskets=2, history=(
        HistoryLine("hub-b1", 100.0, "p1", 2.0, 1.5, "tea"),
        HistoryLine("hub-b2", 200.0, "p2", 1.0, 4.0, "cake"),
    ))], [], cursor="9", done_at=None, now=60.0)
    profile = store.get_profile("m-01")
    assert profile is not None and profile.first_name == "Anna"
    assert [t.basket_id for t in store.purchase_history("m-01")] == ["hub-b1", "hub-b2"]
    # a delta with the same history (a tier change) leaves the lines as they are
    store.apply_profile_page([upsert("m-02", name="Bo")], [], cursor="10", done_at=None,
                             now=70.0)
    assert [(t.basket_id, t.quantity) for t in store.purchase_history("m-02")] == [
        ("hub-b1", 2.0)]
    aggregates = store.get_aggregates("m-01")
    assert aggregates is not None and aggregates.baskets == 2
    reader = SyncReader(store.path)
    try:
        cursor, last = reader.feed_state()["profiles"]
    finally:
        reader.close()
    assert (cursor, last) == ("10", 50.0)  # a page with more to come keeps the last success


def test_a_basket_still_queued_for_the_hub_survives_a_profile_refresh(store: EdgeStore) -> None:
    store.upsert_catalog([])
    assert store.apply_pos_basket(
        "pos-1", basket_id="local-b9", subject="m-01", ts=300.0, lines=[("p7", 1.0, 10.0)],
        payload={"basket_id": "local-b9", "subject": "m-01"},
    )
    store.apply_profile_page([upsert("m-01", baskets=1)], [], cursor="3", done_at=1.0, now=1.0)
    baskets = {t.basket_id for t in store.purchase_history("m-01")}
    assert baskets == {"hub-b1", "local-b9"}
    aggregates = store.get_aggregates("m-01")
    assert aggregates is not None
    assert (aggregates.baskets, aggregates.total_spend, aggregates.last_purchase_ts) == (
        2, 13.0, 300.0)
    # once pushed (outbox row gone), the hub's record is the whole truth again
    store.outbox_ack([row.seq for row in store.outbox_pending()])
    store.apply_profile_page([upsert("m-01", baskets=2, history=(
        HistoryLine("hub-b1", 100.0, "p1", 2.0, 1.5, "tea"),
        HistoryLine("local-b9", 300.0, "p7", 1.0, 10.0, None),
    ))], [], cursor="4", done_at=2.0, now=2.0)
    assert [t.basket_id for t in store.purchase_history("m-01")] == ["hub-b1", "local-b9"]
    assert store.get_aggregates("m-01").baskets == 2  # type: ignore[union-attr]


def test_removal_drops_profile_and_unlinks_purchases(store: EdgeStore) -> None:
    store.apply_profile_page([upsert("m-01"), upsert("m-02")], [], cursor="1", done_at=1.0,
                             now=1.0)
    store.apply_profile_page([], [Removal("m-01", "consent_revoked")], cursor="2", done_at=2.0,
                             now=2.0)
    assert store.get_profile("m-01") is None and store.get_aggregates("m-01") is None
    assert store.purchase_history("m-01") == []
    assert store.get_profile("m-02") is not None
    with sqlite3.connect(store.path) as conn:  # the store keeps the basket, anonymously
        assert conn.execute("SELECT COUNT(*) FROM purchases WHERE subject IS NULL"
                            ).fetchone()[0] == 1


def test_a_failed_page_changes_nothing_not_even_the_cursor(store: EdgeStore) -> None:
    store.apply_catalog_page([CatalogUpsert("p1", "Tea", "tea", 2.0, 5, "z1")], [],
                             cursor="4", done_at=1.0, now=1.0)
    version = store.catalog_version()
    with pytest.raises(sqlite3.IntegrityError):  # name NOT NULL: the whole page rolls back
        store.apply_catalog_page(
            [CatalogUpsert("p2", "Cake", None, 3.0, 1, None),
             CatalogUpsert("p3", None, None, 1.0, 1, None)],  # type: ignore[arg-type]
            [], cursor="9", done_at=2.0, now=2.0,
        )
    assert [c.product_id for c in store.catalog()] == ["p1"]
    reader = SyncReader(store.path)
    try:
        assert reader.feed_state()["catalog"] == ("4", 1.0)
    finally:
        reader.close()
    store.apply_catalog_page([], [Removal("p1", "deleted")], cursor="10", done_at=3.0, now=3.0)
    assert store.catalog() == [] and store.catalog_version() > version  # the worker notices


def test_offers_and_erasure_receipts(store: EdgeStore) -> None:
    store.apply_offers_page([OfferUpsert("o1", None, "tea", 10.0, 0.0, 100.0)], [],
                            cursor="2", done_at=1.0)
    assert [o.offer_id for o in store.active_offers(50.0)] == ["o1"]
    store.apply_offers_page([], [Removal("o1", "deleted")], cursor="3", done_at=1.0)
    assert store.active_offers(50.0) == []
    store.record_erasures(["er-1", "er-2"], cursor="5", done_at=1.0, now=1.0)
    store.record_erasures(["er-2"], cursor="6", done_at=1.0, now=2.0)  # applied once
    reader = SyncReader(store.path)
    try:
        assert reader.known_erasures(["er-1", "er-9"]) == {"er-1"}
        assert reader.unacked_erasures() == ["er-1", "er-2"]
        store.mark_erasure_acked("er-1", 3.0)
        assert reader.unacked_erasures() == ["er-2"]
    finally:
        reader.close()
