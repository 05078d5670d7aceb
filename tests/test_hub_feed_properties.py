"""Properties of the catalog and offers feeds (real SQLite, no HTTP): whatever the sequence of
admin changes, an edge applying the feed — from the start in pages of any size, or after
every change — ends up with exactly the state the hub says the store should have."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.catalog_rows import Listing, Product
from hub.catalog_store import CatalogStore
from hub.feeds import FeedPage
from hub.offer_store import OfferStore
from hub.offers import OfferSpec
from hub.storage import HubDB
from hub.stores import add_store

STORES = ("s1", "s2")
PIDS = ("p-1", "p-2", "p-3")
T0 = 1_750_000_000.0

CATALOG_OPS = st.lists(st.one_of(
    st.tuples(st.just("product"), st.sampled_from(PIDS), st.sampled_from([1.0, 2.0, 3.0]),
              st.sampled_from([None, "st-a", "st-b"])),  # style: a change stores must see
    st.tuples(st.just("list"), st.sampled_from(STORES), st.sampled_from(PIDS),
              st.sampled_from([None, "a", "b"]), st.one_of(st.none(), st.integers(0, 3))),
    st.tuples(st.just("stock"), st.sampled_from(STORES), st.sampled_from(PIDS),
              st.integers(0, 3)),
    st.tuples(st.just("unlist"), st.sampled_from(STORES), st.sampled_from(PIDS)),
    st.tuples(st.just("delete"), st.sampled_from(PIDS)),
), max_size=25)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def open_db(workdir: str, clock: Clock) -> HubDB:
    db = HubDB(Path(workdir) / "hub.db", clock=clock)
    for store in STORES:
        add_store(db, store)
    return db


def apply(edge: dict[str, dict[str, Any]], page: FeedPage, key: str) -> None:
    for item in page.as_dict()["items"]:
        if item["op"] == "delete":
            edge.pop(item[key], None)
        else:
            edge[item[key]] = {k: v for k, v in item.items() if k not in ("op", "seq")}


def drain(read: Any, store: str, edge: dict[str, Any], cursor: int, limit: int,
          key: str) -> int:
    while True:
        page = read(store, cursor, limit)
        apply(edge, page, key)
        assert page.cursor >= cursor
        cursor = page.cursor
        if not page.more:
            return cursor


class CatalogModel:
    """What each store should hold, kept independently of the hub's tables."""

    def __init__(self) -> None:
        self.prices: dict[str, float] = {}
        self.styles: dict[str, str | None] = {}
        self.rows: dict[str, dict[str, list[Any]]] = {s: {} for s in STORES}  # [zone, stock, on]

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "product":
            self.prices[op[1]], self.styles[op[1]] = op[2], op[3]
        elif kind == "list" and op[2] in self.prices:
            old = self.rows[op[1]].get(op[2])
            stock = op[4] if op[4] is not None else (old[1] if old else 0)
            self.rows[op[1]][op[2]] = [op[3], stock, True]
        elif kind == "stock" and self.rows[op[1]].get(op[2], [0, 0, False])[2]:
            self.rows[op[1]][op[2]][1] = op[3]
        elif kind == "unlist" and op[2] in self.rows[op[1]]:
            self.rows[op[1]][op[2]][2] = False
        elif kind == "delete":
            self.prices.pop(op[1], None)
            for rows in self.rows.values():
                if op[1] in rows:
                    rows[op[1]][2] = False

    def state(self, store: str) -> dict[str, Any]:
        return {pid: {"product_id": pid, "name": f"name {pid}", "category": "c",
                      "price": self.prices[pid], "stock": stock, "zone": zone,
                      "style_id": self.styles[pid]}
                for pid, (zone, stock, on) in self.rows[store].items() if on}


@settings(max_examples=60, deadline=None)
@given(CATALOG_OPS, st.integers(1, 4))
def test_catalog_feed_converges(ops: list[tuple[Any, ...]], limit: int) -> None:
    with tempfile.TemporaryDirectory() as workdir, open_db(workdir, Clock()) as db:
        catalog = CatalogStore(db)
        model = CatalogModel()
        live: dict[str, dict[str, Any]] = {s: {} for s in STORES}  # polling after each change
        cursors = dict.fromkeys(STORES, 0)
        # every product exists and is listed everywhere first, so later ops hit real rows
        start = [("product", pid, 1.0, None) for pid in PIDS] + \
            [("list", store, pid, None, 1) for store in STORES for pid in PIDS]
        for op in start + ops:
            if op[0] == "product":
                catalog.upsert_products([Product(op[1], f"name {op[1]}", "c", op[2], None,
                                                 op[3])])
            elif op[0] == "list":
                if catalog.products(product_id=op[2]):
                    catalog.set_assortment(op[1], [Listing(op[2], op[3], op[4])])
            elif op[0] == "stock":
                catalog.set_stock(op[1], {op[2]: op[3]})
            elif op[0] == "unlist":
                catalog.remove_from_assortment(op[1], [op[2]])
            else:
                catalog.delete_product(op[1])
            model.apply(op)
            for store in STORES:
                cursors[store] = drain(catalog.catalog_feed, store, live[store],
                                       cursors[store], limit, "product_id")
        for store in STORES:
            truth = model.state(store)
            fresh: dict[str, Any] = {}
            drain(catalog.catalog_feed, store, fresh, 0, limit, "product_id")
            assert live[store] == truth
            assert fresh == truth
            # nothing new: an idle poll returns no items and keeps the cursor
            page = catalog.catalog_feed(store, cursors[store], limit)
            assert page.items == [] and page.cursor == cursors[store]


OFFER_OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["o-1", "o-2", "o-3"]),
              st.one_of(st.none(), st.lists(st.sampled_from(STORES), unique=True)),
              st.sampled_from([10.0, 20.0]), st.sampled_from([600.0, 7200.0])),
    st.tuples(st.just("withdraw"), st.sampled_from(["o-1", "o-2", "o-3"])),
    st.tuples(st.just("time"), st.sampled_from([30.0, 700.0])),
), max_size=20)


@settings(max_examples=60, deadline=None)
@given(OFFER_OPS, st.integers(1, 3))
def test_offers_feed_converges_to_live_unexpired_targets(ops: list[tuple[Any, ...]],
                                                         limit: int) -> None:
    clock = Clock()
    with tempfile.TemporaryDirectory() as workdir, open_db(workdir, clock) as db:
        offers = OfferStore(db, refresh_s=60.0)
        live: dict[str, dict[str, Any]] = {s: {} for s in STORES}
        cursors = dict.fromkeys(STORES, 0)
        specs: dict[str, tuple[OfferSpec, bool]] = {}  # id -> (spec, withdrawn)
        for op in ops:
            if op[0] == "put":
                spec = OfferSpec(op[1], "p-1", None, op[3], clock.now - 1, clock.now + op[4],
                                 None, None if op[2] is None else tuple(sorted(op[2])))
                offers.put(spec)
                specs[op[1]] = (spec, False)
            elif op[0] == "withdraw":
                if offers.withdraw(op[1]) is not None:
                    specs[op[1]] = (specs[op[1]][0], True)
            else:
                clock.now += op[1]
            for store in STORES:
                cursors[store] = drain(offers.offers_feed, store, live[store], cursors[store],
                                       limit, "offer_id")
        clock.now += 61  # past the refresh interval: expiries must have become deletes
        for store in STORES:
            drain(offers.offers_feed, store, live[store], cursors[store], limit, "offer_id")
            expected = {oid for oid, (spec, withdrawn) in specs.items()
                        if not withdrawn and clock.now < spec.valid_to
                        and (spec.stores is None or store in spec.stores)}
            assert set(live[store]) == expected
            for oid in expected:
                assert live[store][oid]["discount_pct"] == specs[oid][0].discount_pct
