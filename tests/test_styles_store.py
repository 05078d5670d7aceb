"""Styles in storage, on real SQLite files: the hub keeps and feeds ``style_id``, the edge
migrates, stores and reads it back, a style change invalidates the ranking cache, and a
dismiss hides the dismissed product's whole style for the visit."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.migrations import migrate
from edge.store import CatalogItem, EdgeStore, StoreInputError
from edge.store_reader import STYLE_SIBLINGS_SQL
from edge.sync_items import BadItem, CatalogUpsert, Removal, catalog_change
from hub.catalog_rows import InputError, Listing, Product, parse_products_csv
from hub.catalog_store import CatalogStore
from hub.migrations import migrate as migrate_hub
from hub.storage import HubDB
from hub.stores import add_store

T0 = 1_790_000_000.0
SUBJECT = "m-00000000000000aa"
BEANIES = [
    CatalogItem("b-grey", "Wool beanie, grey", "hats", 19.0, 5, "entrance", "beanie"),
    CatalogItem("b-navy", "Wool beanie, navy", "hats", 19.0, 3, "entrance", "beanie"),
    CatalogItem("mug", "Stoneware mug", "kitchen", 9.0, 8, "home"),  # a style of its own
]


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    with EdgeStore(tmp_path / "edge.db") as opened:
        yield opened


def test_an_edge_file_from_before_styles_migrates_with_its_catalog(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=5)
    conn.execute("INSERT INTO catalog(product_id, name, category, price, stock, zone, "
                 "updated_at) VALUES ('mug', 'Stoneware mug', 'kitchen', 9.0, 8, 'home', 1.0)")
    conn.close()
    with EdgeStore(path) as store:
        assert store.catalog() == [BEANIES[2]]
        before = store.catalog_version()
        store.upsert_catalog([BEANIES[2]])  # resent as it is: no change, no new version
        assert store.catalog_version() == before


def test_style_round_trip_and_a_style_change_moves_catalog_version(store: EdgeStore) -> None:
    store.upsert_catalog(BEANIES, now=T0)
    assert store.catalog() == sorted(BEANIES, key=lambda i: i.product_id)
    version = store.catalog_version()
    store.upsert_catalog(BEANIES, now=T0 + 1)
    assert store.catalog_version() == version
    store.upsert_catalog([CatalogItem("mug", "Stoneware mug", "kitchen", 9.0, 8, "home",
                                      "mugs")], now=T0 + 2)
    assert store.catalog_version() == version + 1  # one bump per change, not two
    store.upsert_catalog([BEANIES[2]], now=T0 + 3)  # back to a style of its own
    assert store.catalog_version() == version + 2
    for bad in ("", "  "):
        with pytest.raises(StoreInputError, match="style_id"):
            store.upsert_catalog([CatalogItem("x", "X", None, 1.0, 1, None, bad)])


def test_a_dismissed_variant_hides_its_style_siblings_for_the_visit(store: EdgeStore) -> None:
    store.upsert_catalog(BEANIES, now=T0)
    assert store.cap_counts(SUBJECT, "v1", T0 - 60).dismissed_in_visit == frozenset()
    store.record_feedback("f1", subject=SUBJECT, visit_id="v1", product_id="b-grey",
                          action="dismissed", channel="staff", ts=T0, payload={})
    counts = store.cap_counts(SUBJECT, "v1", T0 - 60)
    assert counts.dismissed_in_visit == frozenset({"b-grey", "b-navy"})
    assert counts.shown_in_visit == {"b-grey": 1}  # only what staff actually turned down
    assert store.cap_counts(SUBJECT, "v2", T0 - 60).dismissed_in_visit == frozenset()
    store.record_feedback("f2", subject=SUBJECT, visit_id="v2", product_id="mug",
                          action="dismissed", channel="staff", ts=T0, payload={})
    assert store.cap_counts(SUBJECT, "v2", T0 - 60).dismissed_in_visit == frozenset({"mug"})


def test_the_sibling_lookup_uses_indexes(store: EdgeStore) -> None:
    conn = sqlite3.connect(store.path)
    plan = " ".join(str(r[3]) for r in conn.execute(
        "EXPLAIN QUERY PLAN " + STYLE_SIBLINGS_SQL, ('["b-grey"]',)))
    conn.close()
    assert "catalog_style" in plan and "SCAN catalog" not in plan, plan


def test_catalog_feed_items_with_and_without_a_style() -> None:
    base = {"op": "upsert", "seq": 1, "product_id": "p1", "name": "Tea", "price": 2,
            "stock": 3}
    assert catalog_change(base) == CatalogUpsert("p1", "Tea", None, 2.0, 3, None, None)
    assert catalog_change({**base, "style_id": "st-1"}).style_id == "st-1"  # type: ignore[union-attr]
    assert catalog_change({**base, "style_id": None}).style_id is None  # type: ignore[union-attr]
    for bad in ("", 5, ["st-1"]):
        with pytest.raises(BadItem, match="style_id"):
            catalog_change({**base, "style_id": bad})


def test_hub_csv_style_column_and_validation() -> None:
    rows = parse_products_csv("product_id,name,price,style_id\nb1,Beanie grey,19,BEANIE\n"
                              "mug,Mug,9,\n")
    assert [(p.product_id, p.style_id) for p in rows] == [("b1", "BEANIE"), ("mug", None)]
    with pytest.raises(InputError) as caught:
        parse_products_csv("product_id,name,price,style_id\nb1,Beanie,19,no spaces\n")
    assert caught.value.detail() == {"reason": "bad_product", "field": "style_id",
                                     "message": caught.value.message, "index": 0}


def test_a_hub_file_from_before_styles_migrates(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    migrate_hub(conn, target=12)
    conn.execute("INSERT INTO products(product_id, name, category, price, brand, updated_at) "
                 "VALUES ('mug', 'Mug', 'kitchen', 9.0, NULL, 1.0)")
    migrate_hub(conn)
    assert conn.execute("SELECT style_id FROM products").fetchall() == [(None,)]
    conn.close()


def test_hub_to_feed_to_edge_round_trip(tmp_path: Path, store: EdgeStore) -> None:
    """The hub's catalog feed carries the style; a style change (and only a change the store
    sees) is a new feed item; the edge applies it and its ranking cache is invalidated."""
    with HubDB(tmp_path / "hub.db", clock=lambda: T0) as db:
        add_store(db, "s1")
        hub = CatalogStore(db)
        hub.upsert_products([Product("b-grey", "Wool beanie, grey", "hats", 19.0, None, "beanie"),
                             Product("b-navy", "Wool beanie, navy", "hats", 19.0, None, "beanie"),
                             Product("mug", "Stoneware mug", "kitchen", 9.0, None)])
        hub.set_assortment("s1", [Listing("b-grey", "entrance", 5),
                                  Listing("b-navy", "entrance", 3), Listing("mug", "home", 8)])

        def pull(cursor: int) -> int:
            page = hub.catalog_feed("s1", cursor, 500).as_dict()
            changes = [catalog_change(item) for item in page["items"]]
            store.apply_catalog_page([c for c in changes if isinstance(c, CatalogUpsert)],
                                     [c for c in changes if isinstance(c, Removal)],
                                     cursor=page["cursor"], done_at=T0, now=T0)
            return int(page["cursor"])

        cursor = pull(0)
        assert store.catalog() == sorted(BEANIES, key=lambda i: i.product_id)
        assert hub.products(product_id="b-grey")[0]["style_id"] == "beanie"

        version = store.catalog_version()
        hub.upsert_products([Product("mug", "Stoneware mug", "kitchen", 9.0, "Hearth")])
        assert hub.catalog_feed("s1", cursor, 500).items == []  # brand: not in the feed
        result = hub.upsert_products([Product("mug", "Stoneware mug", "kitchen", 9.0,
                                              "Hearth", "mugs")])
        assert result["updated"] == 1
        cursor = pull(cursor)
        assert [i.style_id for i in store.catalog() if i.product_id == "mug"] == ["mugs"]
        assert store.catalog_version() == version + 1
