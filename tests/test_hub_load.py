"""Hub speed on a real served hub: ingestion in batches of 1000 and 5000-profile feed pages.

Scaled down from the targets (200,000 events in well under 60 s; 10,000 profile deltas
served for an edge to apply within 2 s) so the test stays short; ``scripts/bench_hub``
runs the full size. Bounds leave room for a loaded CI box.
"""

from __future__ import annotations

import time
from pathlib import Path

from hub.devtools import EmbeddedHub, synthetic_event_batches, synthetic_members_csv
from models.identity import pseudonymous_id

MEMBERS = 10_000
EVENTS = 30_000


def test_ingestion_rate_and_feed_of_10000_profiles(tmp_path: Path) -> None:
    with EmbeddedHub(tmp_path, stores=("s1", "s2")) as hub:
        report = hub.admin().post("/v1/members/import", timeout=120,
                                  content=synthetic_members_csv(MEMBERS, "s1")).json()
        assert report["created"] == MEMBERS and report["errors"] == []
        subjects = [pseudonymous_id(str(100_000 + i), hub.settings.salt)
                    for i in range(MEMBERS)]
        bodies = synthetic_event_batches(subjects, EVENTS, 1000, lines=3)
        client = hub.store("s2")
        started = time.perf_counter()
        for body in bodies:
            r = client.post("/v1/stores/s2/events", content=body, timeout=60,
                            headers={"content-type": "application/json"})
            assert r.status_code == 200 and len(r.json()["accepted"]) == 1000
        rate = EVENTS / (time.perf_counter() - started)
        assert rate > 200_000 / 60 * 1.5, f"{rate:.0f} events/s"  # 200k well under 60 s

        feed = hub.store("s1")
        started = time.perf_counter()
        cursor, total, more = "0", 0, True
        while more:
            page = feed.get("/v1/stores/s1/feed/profiles", timeout=60,
                            params={"cursor": cursor, "limit": 5000}).json()
            total += len(page["items"])
            cursor, more = page["cursor"], page["more"]
        elapsed = time.perf_counter() - started
        assert total == MEMBERS
        assert elapsed < 2.0, f"10,000 profiles took {elapsed:.2f} s"
