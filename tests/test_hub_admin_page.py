"""The hub page: ``/v1/admin/overview`` over real data (heartbeats, events, erasures, a model
rollout) and the page itself in headless Debian Chromium (Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.devtools import EmbeddedHub
from hub.overview import store_health
from tests.hub_catalog_env import T0, Clock, add_members, start_hub

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def hub(tmp_path: Path, clock: Clock) -> Iterator[EmbeddedHub]:
    running = start_hub(tmp_path, ("s1", "s2"), clock)
    try:
        yield running
    finally:
        running.stop()


def event(n: int, kind: str, subject: str | None, payload: dict[str, Any],
          at: float = T0 - 60) -> dict[str, Any]:
    return {"event_id": f"ev-{kind}-{n}", "kind": kind, "subject": subject,
            "payload": payload, "created_at": at}


def populate(hub: EmbeddedHub, clock: Clock) -> dict[str, str]:
    subjects = add_members(hub.context.db, [
        {"loyalty": "L1", "tier": "gold", "home_store": "s1"},
        {"loyalty": "L2", "tier": "basic", "home_store": "s2"}], hub.settings.salt)
    m1, m2 = subjects["L1"], subjects["L2"]
    shown = {"visit_id": "v1", "channel": "staff",
             "items": [{"product_id": f"p-{i}", "rank": i} for i in range(1, 4)]}
    events = [
        event(1, "checkin", m1, {"visit_id": "v1"}),
        event(2, "checkin", None, {"visit_id": "v2"}),
        event(1, "impression", m1, shown),
        event(2, "impression", None, {**shown, "items": shown["items"][:2]}),
        event(1, "feedback", m1, {"action": "accepted", "product_id": "p-1"}),
        event(2, "feedback", m1, {"action": "redeemed", "product_id": "p-1"}),
        event(3, "feedback", m1, {"action": "dismissed", "product_id": "p-2"}),
        event(3, "checkin", m1, {"visit_id": "v0"}, at=T0 - 3 * 86_400),  # outside 24 h
    ]
    with hub.store("s1") as s1, hub.admin() as admin:
        r = s1.post("/v1/stores/s1/events", json={"events": events})
        assert r.status_code == 200 and not r.json()["refused"], r.text
        r = s1.post("/v1/stores/s1/heartbeat", json={
            "model_version": "m-2025-01", "state": "online", "outbox_pending": 3,
            "feeds": {"profiles": "0"}, "staleness_s": 4.0, "active_visits": 2})
        assert r.status_code == 200, r.text
        erased = admin.delete(f"/v1/members/{m2}").json()
        assert s1.post(f"/v1/stores/s1/erasures/{erased['erasure_id']}/ack").status_code == 200
        admin.put("/v1/catalog/products", json={"products": [
            {"product_id": "p-1", "name": "Milk", "price": 1.0}]})
        admin.put("/v1/stores/s1", json={"name": "Vienna Centre", "timezone": "Europe/Vienna"})
    from hub import model_registry
    model_registry.publish(hub.context.db, version="m-2025-02", sha256="0" * 64,
                           signature="sig", key_id="k1", archive=b"bundle", manifest={},
                           evaluation={})
    model_registry.rollout(hub.context.db, "m-2025-02", ["s1"])
    return {"erasure_id": erased["erasure_id"], "m1": m1}


def test_overview_reports_stores_kpis_rollout_and_erasures(hub: EmbeddedHub,
                                                           clock: Clock) -> None:
    ids = populate(hub, clock)
    clock.now = T0 + 5
    with hub.admin() as admin, hub.store("s1") as s1:
        assert s1.get("/v1/admin/overview").status_code == 403
        assert admin.get("/v1/admin/overview", params={"window_h": 0}).status_code == 422
        data = admin.get("/v1/admin/overview").json()
    stores = {s["store"]: s for s in data["stores"]}
    s1_row, s2_row = stores["s1"], stores["s2"]
    assert s1_row["name"] == "Vienna Centre"
    assert s1_row["health"] == "ok" and s1_row["model_version"] == "m-2025-01"
    assert s1_row["since_last_sync_s"] == pytest.approx(5.0)
    assert s1_row["lag_changes"] > 0 and s1_row["outbox_pending"] == 3
    assert s1_row["kpis"] == {"checkins": 2, "shown": 5, "accepted": 1, "redeemed": 1}
    assert s2_row["health"] == "never" and s2_row["kpis"]["checkins"] == 0
    assert data["rollout"]["available"] is True
    rollout = {r["store"]: r for r in data["rollout"]["stores"]}
    assert rollout["s1"]["assigned"] == "m-2025-02" and rollout["s1"]["state"] == "pending"
    assert rollout["s2"]["state"] == "unassigned"
    assert data["erasures"]["total"] == 1 and data["erasures"]["complete"] == 0
    assert data["erasures"]["latest"] == [{"erasure_id": ids["erasure_id"],
                                           "requested_at": T0, "acked": ["s1"],
                                           "pending": ["s2"]}]
    assert data["catalog"] == {"products": 1, "offers_active": 0, "segments": 0}
    clock.now = T0 + 120
    with hub.admin() as admin:
        later = admin.get("/v1/admin/overview", params={"window_h": 100}).json()
    assert {s["store"]: s["health"] for s in later["stores"]}["s1"] == "late"
    assert later["stores"][0]["kpis"]["checkins"] == 3


@pytest.mark.parametrize(("status", "health"), [
    ({"since_last_sync_s": None}, "never"),
    ({"since_last_sync_s": 301.0}, "offline"),
    ({"since_last_sync_s": 61.0, "state": "degraded"}, "late"),
    ({"since_last_sync_s": 2.0, "state": "degraded"}, "degraded"),
    ({"since_last_sync_s": 2.0, "state": "online", "staleness_s": 600.0}, "stale"),
    ({"since_last_sync_s": 2.0, "state": "online", "staleness_s": None}, "ok"),
])
def test_store_health(status: dict[str, Any], health: str) -> None:
    assert store_health(status) == health


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed")
def test_page_in_chromium_asks_for_the_token_once_and_shows_stores(
    hub: EmbeddedHub, clock: Clock,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    populate(hub, clock)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{hub.url}/")  # redirects to /admin
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", "not-the-token")
            page.click("#login button[type=submit]")
            expect(page.locator("#login-error")).to_contain_text("not an admin token")
            page.fill("#token", hub.admin_token)
            page.click("#login button[type=submit]")
            row = page.locator("#stores tr[data-store='s1']")
            expect(row).to_contain_text("Vienna Centre")
            expect(row).to_contain_text("m-2025-01")
            expect(row.locator(".badge")).to_have_text("ok")
            expect(page.locator("#stores tr[data-store='s2'] .badge")).to_have_text("never")
            expect(page.locator("#rollout")).to_contain_text("m-2025-02")
            expect(page.locator("#erasures")).to_contain_text("s2")
            # the token stays in this tab: a reload does not ask again
            page.reload()
            expect(page.locator("#stores tr[data-store='s1']")).to_be_visible()
            expect(page.locator("#login")).to_be_hidden()
            page.click("#signout")
            expect(page.locator("#login")).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0
            assert errors == []
        finally:
            browser.close()
