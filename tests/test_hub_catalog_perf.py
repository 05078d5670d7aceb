"""Speed of the hub's catalog feed and segment evaluation at chain scale (real hub, HTTP).

Bounds are generous (a shared 2-core CI box); the measured medians are printed (-s) and
quoted in docs/hub.md.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from hub.segments import DAY_S
from tests.hub_catalog_env import GOLD, T0, Clock, add_members, start_hub


def median_s(call: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def test_catalog_feed_page_of_5000_and_segment_over_10000_members(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, ("s1",), Clock())
    try:
        products = [{"product_id": f"p-{i:05d}", "name": f"Product {i}", "category": f"c{i % 40}",
                     "price": 1.0 + i % 50} for i in range(5000)]
        with hub.admin() as admin, hub.store("s1") as s1:
            assert admin.put("/v1/catalog/products", json={"products": products}).json()[
                "created"] == 5000
            admin.put("/v1/stores/s1/assortment", json={"items": [
                {"product_id": p["product_id"], "zone": "z", "stock": 5} for p in products]})

            def page() -> None:
                r = s1.get("/v1/stores/s1/feed/catalog", params={"cursor": "0", "limit": 5000})
                body = r.json()
                assert len(body["items"]) == 5000 and body["more"] is False

            feed_s = median_s(page)

            add_members(hub.context.db, [
                {"loyalty": f"L{i}", "tier": ("gold", "silver", "basic")[i % 3],
                 "home_store": "s1", "baskets": i % 40, "total_spend": float(i % 1500),
                 "last_purchase_ts": T0 - (i % 90) * DAY_S} for i in range(10_000)],
                hub.settings.salt)
            admin.put("/v1/segments/gold", json={"rule": GOLD})
            expected = sum(1 for i in range(10_000) if i % 1500 >= 500 and i % 3 == 0
                           and i % 90 <= 30)

            def members() -> None:
                r = admin.get("/v1/segments/gold/members", params={"limit": 0})
                assert r.json()["count"] == expected

            segment_s = median_s(members)
        print(f"\ncatalog feed page of 5000 items: {feed_s * 1000:.1f} ms (median of 5, HTTP)"
              f"\nsegment over 10,000 members: {segment_s * 1000:.1f} ms (median of 5, HTTP)")
        assert feed_s < 1.0
        assert segment_s < 1.0
    finally:
        hub.stop()
