"""Helpers for the hub catalog / offers / overview tests: a hub with a controllable clock,
members with aggregates, and reading a whole feed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from hub.devtools import EmbeddedHub, hub_settings
from hub.members import import_members
from hub.members_csv import MemberRecord
from hub.settings import RelevanceSettings
from hub.storage import HubDB
from models.identity import pseudonymous_id

T0 = 1_750_000_000.0
CONSENT = {"personalize": True, "staff_display": True, "app_offers": True}
# The brief's example segment: gold members who spent 500+ and bought within 30 days.
GOLD = {"all": [{"field": "total_spend", "op": ">=", "value": 500},
                {"field": "tier", "op": "in", "value": ["gold"]},
                {"field": "days_since_last_purchase", "op": "<=", "value": 30}]}


class Clock:
    """A clock the test moves (offer windows, refresh intervals) instead of sleeping."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def start_hub(workdir: Path, stores: tuple[str, ...], clock: Clock,
              **overrides: Any) -> EmbeddedHub:
    settings = hub_settings(workdir, **overrides)
    return EmbeddedHub(workdir, stores=stores, settings=settings, clock=clock).start()


def add_members(db: HubDB, members: list[dict[str, Any]], salt: str) -> dict[str, str]:
    """CRM import (hub-core's real path: relevance rows for the home store) + aggregates.
    ``members``: {"loyalty", "tier", "home_store", "baskets", "total_spend",
    "last_purchase_ts"}. Returns {loyalty: subject}."""
    records = [MemberRecord(line=i + 2, loyalty_number=m["loyalty"], first_name="A",
                            last_name=None, email=None, birthday=None, tier=m.get("tier"),
                            home_store=m.get("home_store"), preferences={},
                            consent=dict(CONSENT))
               for i, m in enumerate(members)]
    import_members(db, records, salt, RelevanceSettings())
    subjects = {m["loyalty"]: pseudonymous_id(m["loyalty"], salt) for m in members}
    with db.write() as conn:
        conn.executemany(
            "INSERT OR REPLACE INTO aggregates(subject, baskets, total_spend, last_purchase_ts, "
            "updated_at) VALUES (?, ?, ?, ?, ?)",
            [(subjects[m["loyalty"]], m.get("baskets", 0), m.get("total_spend", 0.0),
              m.get("last_purchase_ts"), db.clock()) for m in members])
    return subjects


def feed_pages(client: httpx.Client, store: str, feed: str, cursor: str = "0",
               limit: int = 500) -> Iterator[dict[str, Any]]:
    while True:
        r = client.get(f"/v1/stores/{store}/feed/{feed}", params={"cursor": cursor,
                                                                    "limit": limit})
        assert r.status_code == 200, r.text
        page = r.json()
        yield page
        cursor = page["cursor"]
        if not page["more"]:
            return


def read_feed(client: httpx.Client, store: str, feed: str, cursor: str = "0",
              limit: int = 500) -> tuple[list[dict[str, Any]], str]:
    items: list[dict[str, Any]] = []
    for page in feed_pages(client, store, feed, cursor, limit):
        items.extend(page["items"])
        cursor = page["cursor"]
    return items, cursor
