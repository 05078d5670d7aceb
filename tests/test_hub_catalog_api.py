"""Catalog, stores, assortment, stock and the catalog feed on a real hub (uvicorn + SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.devtools import EmbeddedHub
from tests.hub_catalog_env import Clock, read_feed, start_hub

PRODUCTS = [
    {"product_id": "p-1", "name": "Milk 1l", "category": "dairy", "price": 1.2},
    {"product_id": "p-2", "name": "Butter", "category": "dairy", "price": 2.5, "brand": "Alp"},
    {"product_id": "p-3", "name": "Bread", "category": "bakery", "price": 3.0},
]


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    running = start_hub(tmp_path, ("s1", "s2"), Clock())
    try:
        yield running
    finally:
        running.stop()


def setup_stores(hub: EmbeddedHub) -> None:
    with hub.admin() as admin:
        assert admin.put("/v1/catalog/products", json={"products": PRODUCTS}).status_code == 200
        for store in ("s1", "s2"):
            r = admin.put(f"/v1/stores/{store}", json={
                "name": f"Store {store}", "timezone": "Europe/Vienna",
                "zones": ["front", "dairy", "bakery"]})
            assert r.status_code == 200, r.text
        r = admin.put("/v1/stores/s1/assortment", json={"items": [
            {"product_id": "p-1", "zone": "dairy", "stock": 10},
            {"product_id": "p-2", "zone": "dairy"},
            {"product_id": "p-3", "zone": "bakery", "stock": 4}]})
        assert r.json() == {"listed": 3, "unchanged": 0, "removed": 0}
        admin.put("/v1/stores/s2/assortment", json={"items": [{"product_id": "p-1"}]})


def test_products_json_and_csv_upsert_and_read(hub: EmbeddedHub) -> None:
    with hub.admin() as admin:
        r = admin.put("/v1/catalog/products", json={"products": PRODUCTS})
        assert r.json() == {"received": 3, "created": 3, "updated": 0, "unchanged": 0}
        csv_body = "product_id,name,category,price,brand\np-3,Bread,bakery,3.0,\n" \
                   "p-4,Rye bread,bakery,3.5,Mill\n"
        r = admin.put("/v1/catalog/products", content=csv_body.encode(),
                      headers={"Content-Type": "text/csv"})
        assert r.json() == {"received": 2, "created": 1, "updated": 0, "unchanged": 1}
        assert admin.get("/v1/catalog/products/p-4").json()["brand"] == "Mill"
        page = admin.get("/v1/catalog/products", params={"limit": 2}).json()
        assert [p["product_id"] for p in page["products"]] == ["p-1", "p-2"]
        rest = admin.get("/v1/catalog/products", params={"after": page["next_after"]}).json()
        assert [p["product_id"] for p in rest["products"]] == ["p-3", "p-4"]
        assert admin.delete("/v1/catalog/products/p-4").json()["deleted"] is True
        assert admin.get("/v1/catalog/products/p-4").json()["detail"]["reason"] == \
            "unknown_product"


@pytest.mark.parametrize(("body", "headers", "status", "detail"), [
    (b"{nope", {"Content-Type": "application/json"}, 400, {"reason": "bad_json"}),
    (b'{"products": [{"product_id": "p-1", "name": "A", "price": 1}, '
     b'{"product_id": "p-2", "name": "B", "price": -1}]}', {}, 422,
     {"reason": "bad_product", "field": "price", "index": 1}),
    (b'{"products": [{"product_id": "p 1", "name": "A", "price": 1}]}', {}, 422,
     {"reason": "bad_product", "field": "product_id", "index": 0}),
    (b'{"products": [{"product_id": "p-1", "name": "A", "price": 1, "colour": "red"}]}', {},
     422, {"reason": "bad_product", "field": "colour"}),
    (b'{"products": [{"product_id": "p-1", "name": "A", "price": 1, "style_id": "a b"}]}', {},
     422, {"reason": "bad_product", "field": "style_id", "index": 0}),
    (b'{"items": []}', {}, 422, {"reason": "bad_product", "field": "products"}),
    (b"product_id,name\np-1,A\n", {"Content-Type": "text/csv"}, 422,
     {"reason": "bad_csv", "field": "header"}),
    (b"product_id,name,price\np-1,A,1\np-2,B,cheap\n", {"Content-Type": "text/csv"}, 422,
     {"reason": "bad_product", "field": "price", "index": 1}),
])
def test_bad_product_bodies_get_4xx_with_reason(hub: EmbeddedHub, body: bytes,
                                                headers: dict[str, str], status: int,
                                                detail: dict[str, object]) -> None:
    with hub.admin() as admin:
        r = admin.put("/v1/catalog/products", content=body, headers=headers)
        assert r.status_code == status, r.text
        got = r.json()["detail"]
        assert {k: got.get(k) for k in detail} == detail
        assert admin.get("/v1/catalog/products").json()["products"] == []  # nothing applied


def test_roles_only_admin_writes_and_a_store_reads_only_its_own(hub: EmbeddedHub) -> None:
    setup_stores(hub)
    with hub.store("s1") as s1, hub.client() as anonymous, hub.app_backend() as app:
        assert anonymous.get("/v1/stores/s1/feed/catalog").status_code == 401
        assert s1.put("/v1/catalog/products", json={"products": PRODUCTS}).status_code == 403
        assert app.put("/v1/stores/s1/stock", json={"items": []}).status_code == 403
        assert s1.put("/v1/stores/s1/stock", json={"items": []}).status_code == 403
        assert s1.get("/v1/stores/s2/feed/catalog").status_code == 403
        assert s1.get("/v1/stores/s2").status_code == 403
        meta = s1.get("/v1/stores/s1").json()
        assert meta == {"store": "s1", "name": "Store s1", "timezone": "Europe/Vienna",
                        "zones": ["front", "dairy", "bakery"], "products": 3}


def test_store_and_assortment_validation(hub: EmbeddedHub) -> None:
    setup_stores(hub)
    with hub.admin() as admin:
        def detail(r: object) -> dict[str, object]:
            return r.json()["detail"]  # type: ignore[attr-defined,no-any-return]

        r = admin.put("/v1/stores/s1", json={"timezone": "Mars/Olympus"})
        assert r.status_code == 422 and detail(r)["field"] == "timezone"
        r = admin.put("/v1/stores/s1", json={"timezone": "UTC", "zones": ["a", "a"]})
        assert r.status_code == 422 and detail(r)["field"] == "zones"
        r = admin.put("/v1/stores/nowhere", json={"timezone": "UTC"})
        assert r.status_code == 404 and detail(r)["reason"] == "unknown_store"
        r = admin.put("/v1/stores/s1/assortment", json={"items": [{"product_id": "p-9"}]})
        assert r.status_code == 422 and detail(r)["reason"] == "unknown_products"
        assert "p-9" in str(detail(r)["message"])
        r = admin.put("/v1/stores/s1/assortment",
                      json={"items": [{"product_id": "p-1", "zone": "garden"}]})
        assert r.status_code == 422 and detail(r)["reason"] == "unknown_zone"
        r = admin.put("/v1/stores/s1/stock", json={"items": [{"product_id": "p-1",
                                                              "stock": 1.5}]})
        assert r.status_code == 422 and detail(r) == {
            "reason": "bad_stock", "field": "stock", "index": 0,
            "message": "must be a whole number >= 0, got 1.5"}
        r = admin.get("/v1/stores/s1/feed/catalog", params={"cursor": "abc"})
        assert r.status_code == 422 and detail(r)["reason"] == "bad_cursor"
        r = admin.get("/v1/stores/s1/feed/catalog", params={"limit": 99_999})
        assert r.status_code == 422 and detail(r)["reason"] == "bad_limit"


def test_catalog_feed_pages_changes_and_deletes(hub: EmbeddedHub) -> None:
    setup_stores(hub)
    with hub.admin() as admin, hub.store("s1") as s1, hub.store("s2") as s2:
        pages = [s1.get("/v1/stores/s1/feed/catalog", params={"cursor": "0", "limit": 2})
                 .json()]
        pages.append(s1.get("/v1/stores/s1/feed/catalog",
                            params={"cursor": pages[0]["cursor"], "limit": 2}).json())
        assert [p["more"] for p in pages] == [True, False]
        items = pages[0]["items"] + pages[1]["items"]
        assert [i["product_id"] for i in items] == ["p-1", "p-2", "p-3"]
        assert items[0] == {"op": "upsert", "seq": items[0]["seq"], "product_id": "p-1",
                            "name": "Milk 1l", "category": "dairy", "price": 1.2,
                            "stock": 10, "zone": "dairy", "style_id": None}
        assert items[1]["stock"] == 0  # listed without a count: not in stock until the ERP
        cursor = pages[1]["cursor"]
        assert int(cursor) >= items[-1]["seq"]
        assert s1.get("/v1/stores/s1/feed/catalog", params={"cursor": cursor}).json() == \
            {"items": [], "cursor": cursor, "more": False}
        _, cursor2 = read_feed(s2, "s2", "catalog")

        # ERP stock: one change, one resend (free), one product the store does not list
        r = admin.put("/v1/stores/s1/stock", json={"items": [
            {"product_id": "p-1", "stock": 10}, {"product_id": "p-2", "stock": 7},
            {"product_id": "p-9", "stock": 1}]})
        assert r.json() == {"updated": 1, "unchanged": 1, "unknown": ["p-9"],
                            "unknown_count": 1}
        # a price change reaches every store that lists the product; brand alone does not
        admin.put("/v1/catalog/products", json={"products": [
            {**PRODUCTS[0], "price": 1.1}, {**PRODUCTS[2], "brand": "Mill"}]})
        items, cursor = read_feed(s1, "s1", "catalog", cursor)
        assert [(i["product_id"], i.get("stock"), i.get("price")) for i in items] == \
            [("p-2", 7, 2.5), ("p-1", 10, 1.1)]
        items2, cursor2 = read_feed(s2, "s2", "catalog", cursor2)
        assert [(i["product_id"], i["price"]) for i in items2] == [("p-1", 1.1)]

        # removal from the store, and from the whole catalog
        r = admin.post("/v1/stores/s1/assortment/remove", json={"product_ids": ["p-3", "p-8"]})
        assert r.json() == {"removed": 1, "not_listed": 1}
        admin.delete("/v1/catalog/products/p-1")
        items, cursor = read_feed(s1, "s1", "catalog", cursor)
        assert [(i["op"], i["product_id"]) for i in items] == \
            [("delete", "p-3"), ("delete", "p-1")]
        items2, _ = read_feed(s2, "s2", "catalog", cursor2)
        assert [(i["op"], i["product_id"]) for i in items2] == [("delete", "p-1")]

        # replace: the given list is the whole assortment; re-listing keeps the last stock
        r = admin.put("/v1/stores/s1/assortment", params={"replace": "true"},
                      json={"items": [{"product_id": "p-3", "zone": "front"}]})
        assert r.json() == {"listed": 1, "unchanged": 0, "removed": 1}
        items, _ = read_feed(s1, "s1", "catalog", cursor)
        assert [(i["op"], i["product_id"], i.get("stock"), i.get("zone")) for i in items] == \
            [("upsert", "p-3", 4, "front"), ("delete", "p-2", None, None)]
        listed = admin.get("/v1/stores/s1/assortment").json()["items"]
        assert [(i["product_id"], i["zone"]) for i in listed] == [("p-3", "front")]
        # a fresh edge (cursor 0) converges to the same state
        full, _ = read_feed(s1, "s1", "catalog")
        state: dict[str, dict[str, object]] = {}
        for item in full:
            if item["op"] == "delete":
                state.pop(item["product_id"], None)
            else:
                state[item["product_id"]] = item
        assert sorted(state) == ["p-3"]
