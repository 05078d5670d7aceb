"""One hub, two store edges, real processes: what the chain relies on across stores.

A `storeside-hub serve` process, two `storeside-edge` processes (each with its own SQLite
file and HTTP port) and Mosquitto: a member shopping in a second store becomes known there
and their aggregates follow them to their home store; a change made at the hub reaches both
stores; an erasure leaves nothing in either store and the hub sees both acknowledgements;
every basket reaches the hub exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EdgeProcess
from edge.probe import wait_until
from hub.devtools import HubProcess, hub_settings
from tests.sync_env import (
    CHAIN,
    ERASED_TABLES,
    db_rows,
    edge_settings,
    import_members,
    list_products,
    pos_basket,
    shelf,
    subject_of,
)

STORES = ("s001", "s002")
PRODUCTS = shelf(8, stock=30, price=lambda i: 2.0 + i)
ANA = {"loyalty_number": "L-2001", "first_name": "Ana", "tier": "gold", "home_store": "s001"}


def first_name(db: Path, subject: str) -> object:
    found = db_rows(db, "SELECT first_name FROM profiles WHERE subject = ?", subject)
    return found[0][0] if found else None


def baskets(db: Path, subject: str) -> object:
    found = db_rows(db, "SELECT baskets FROM aggregates WHERE subject = ?", subject)
    return found[0][0] if found else None


@pytest.fixture()
def chain(
    tmp_path: Path, broker: PrivateBroker
) -> Iterator[tuple[HubProcess, dict[str, EdgeProcess]]]:
    settings = hub_settings(tmp_path, chain=CHAIN)
    hub = HubProcess(tmp_path, stores=STORES, settings=settings).start()
    edges: dict[str, EdgeProcess] = {}
    try:
        import_members(hub.admin(), [ANA])
        for store in STORES:
            list_products(hub.admin(), store, PRODUCTS)
        for store in STORES:
            workdir = tmp_path / store
            workdir.mkdir()
            cfg = edge_settings(workdir, store, hub.url, hub.store_keys[store], broker.port)
            edges[store] = EdgeProcess(cfg, workdir).start()
        yield hub, edges
    finally:
        for edge in edges.values():
            edge.stop()
        hub.stop()


def test_two_stores_follow_the_hub_and_report_back(
    chain: tuple[HubProcess, dict[str, EdgeProcess]],
) -> None:
    hub, edges = chain
    ana = subject_of(ANA["loyalty_number"])
    db = {store: edge.settings.db_path for store, edge in edges.items()}
    hub_db = hub.settings.db_path

    # Ana's home store knows her; the other store does not (yet).
    wait_until(lambda: first_name(db["s001"], ana) == "Ana", 20)
    assert first_name(db["s002"], ana) is None

    # She shops in s002: the basket reaches the hub once, she becomes relevant to s002,
    # and her home store's cache counts the basket (cross-store freshness).
    basket = pos_basket(ana, [("p3", 1, 5.0), ("p4", 2, 6.0)])
    answer = httpx.post(f"{edges['s002'].url}/v1/pos", json=basket, timeout=10)
    assert answer.status_code == 202, answer.text
    wait_until(lambda: baskets(db["s001"], ana) == 1, 20)
    wait_until(lambda: first_name(db["s002"], ana) == "Ana", 20)
    assert db_rows(hub_db, "SELECT COUNT(*) FROM events WHERE event_id = ?",
                   basket["event_id"]) == [(1,)]
    # the same basket sent again (a till retrying) changes nothing anywhere
    again = httpx.post(f"{edges['s002'].url}/v1/pos", json=basket, timeout=10)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    wait_until(lambda: db_rows(db["s002"], "SELECT COUNT(*) FROM outbox") == [(0,)], 20)
    assert db_rows(hub_db, "SELECT COUNT(*) FROM events WHERE event_id = ?",
                   basket["event_id"]) == [(1,)]
    assert db_rows(hub_db, "SELECT baskets FROM aggregates WHERE subject = ?", ana) == [(1,)]

    # A change made at the hub (CRM re-import) reaches both stores.
    import_members(hub.admin(), [{**ANA, "first_name": "Anabel", "tier": "platinum"}])
    for store in STORES:
        wait_until(lambda store=store: first_name(db[store], ana) == "Anabel", 20)

    # Erasure: both stores delete everything about her and acknowledge; the hub shows it.
    erasure = hub.admin().delete(f"/v1/members/{ana}")
    erasure.raise_for_status()
    erasure_id = erasure.json()["erasure_id"]

    def both_acked() -> bool:
        status = hub.admin().get(f"/v1/erasures/{erasure_id}").json()
        return {a["store"] for a in status["acknowledged"]} >= set(STORES)

    wait_until(both_acked, 30)
    assert hub.admin().get(f"/v1/erasures/{erasure_id}").json()["pending"] == []
    for store in STORES:
        for table in ERASED_TABLES:
            assert db_rows(db[store], f"SELECT COUNT(*) FROM {table} WHERE subject = ?",
                           ana) == [(0,)], (store, table)
    # a late basket of hers from a till is accepted locally but refused by the hub for good
    late = pos_basket(ana, [("p1", 1, 3.0)])
    assert httpx.post(f"{edges['s001'].url}/v1/pos", json=late, timeout=10).status_code == 202
    wait_until(lambda: db_rows(db["s001"], "SELECT COUNT(*) FROM outbox") == [(0,)], 20)
    assert db_rows(hub_db, "SELECT COUNT(*) FROM events WHERE event_id = ?",
                   late["event_id"]) == [(0,)]
