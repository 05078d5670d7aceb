"""Hub /metrics on a real hub (uvicorn, SQLite): the counters move with traffic, the
scrape-time gauges read the tables, labels stay bounded and carry no subject, and only the
admin and viewer roles may scrape."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.devtools import EmbeddedHub, hub_settings
from hub.roles import ROUTES
from tests.auth_env import bearer, hub_token
from tests.hub_env import T0, Clock, basket, csv_text, member_row, subject


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    settings = hub_settings(tmp_path, rate_limits={"checkin_tokens_per_subject_per_min": 2,
                                                   "auth_failures_per_min": 4})
    with EmbeddedHub(tmp_path, stores=("s1", "s2"), settings=settings,
                     clock=Clock()) as running:
        yield running


def scrape(hub: EmbeddedHub) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of one scrape (admin key)."""
    answer = hub.admin().get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_with_traffic_and_gauges_read_the_tables(hub: EmbeddedHub) -> None:
    admin, app, s1 = hub.admin(), hub.app_backend(), hub.store("s1")
    assert admin.post("/v1/members/import", content=csv_text(member_row(1), member_row(2)),
                      headers={"content-type": "text/csv"}).status_code == 200
    before = scrape(hub)
    # events: 2 accepted, 1 duplicate (re-sent), 1 refused bad_event
    first = basket(subject(1), T0)
    pushed = s1.post("/v1/stores/s1/events", json={"events": [first, basket(None, T0)]})
    again = s1.post("/v1/stores/s1/events",
                    json={"events": [first, {"event_id": "x", "kind": "pos_basket"}]})
    assert pushed.status_code == again.status_code == 200
    # feeds, a heartbeat 30 s ago, an erasure s1 acknowledges and s2 does not
    assert s1.get("/v1/stores/s1/feed/profiles").status_code == 200
    assert s1.get("/v1/stores/s1/erasures").status_code == 200
    assert s1.post("/v1/stores/s1/heartbeat", json={"outbox_pending": 7}).status_code == 200
    erasure = admin.delete(f"/v1/members/{subject(2)}").json()["erasure_id"]
    assert s1.post(f"/v1/stores/s1/erasures/{erasure}/ack").status_code == 200
    hub.context.clock.advance(30)
    # check-in tokens: 2 issued, then the member's limit (2/min), an unknown member
    for _ in range(3):
        app.post("/v1/tokens/checkin", json={"subject": subject(1), "store": "s1"})
    app.post("/v1/tokens/checkin", json={"subject": subject(9), "store": "s1"})
    # auth: no token, bad tokens (4/min per address), a store on another store's feed
    hub.client().get("/v1/offers")
    for _ in range(3):
        hub.client("not-a-key").get("/v1/offers")
    hub.store("s2").get("/v1/stores/s1/feed/profiles")
    after = scrape(hub)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("storeside_hub_events_total", store="s1", outcome="accepted") == 2
    assert moved("storeside_hub_events_total", store="s1", outcome="duplicate") == 1
    assert moved("storeside_hub_events_total", store="s1", outcome="refused_bad_event") == 1
    assert moved("storeside_hub_feed_pages_total", feed="profiles") == 1
    assert moved("storeside_hub_feed_pages_total", feed="erasures") == 1
    assert moved("storeside_hub_checkin_tokens_total", outcome="issued") == 2
    assert moved("storeside_hub_checkin_tokens_total", outcome="rate_limited") == 1
    assert moved("storeside_hub_checkin_tokens_total", outcome="unknown_member") == 1
    assert moved("storeside_hub_rate_limited_total", limiter="checkin_tokens_subject") == 1
    assert moved("storeside_hub_auth_refused_total", reason="missing_token") == 1
    assert moved("storeside_hub_auth_refused_total", reason="bad_token") == 3
    assert moved("storeside_hub_auth_refused_total", reason="forbidden") == 1
    route = "/v1/stores/{store}/events"
    assert moved("storeside_hub_requests_total", route=route, method="POST", status="2xx") == 2
    assert moved("storeside_hub_request_seconds_count", route=route, method="POST") == 2
    assert moved("storeside_hub_refusals_total", route="/v1/offers", reason="bad_token") == 3
    # scrape-time gauges
    assert value(after, "storeside_hub_stores") == 2
    assert value(after, "storeside_hub_store_last_sync_age_seconds", store="s1") == 30
    assert ("storeside_hub_store_last_sync_age_seconds", (("store", "s2"),)) not in after
    assert value(after, "storeside_hub_store_outbox_pending", store="s1") == 7
    assert value(after, "storeside_hub_erasures") == 1
    assert value(after, "storeside_hub_erasures_pending", store="s1") == 0
    assert value(after, "storeside_hub_erasures_pending", store="s2") == 1
    # a 4th bad token spends the address's last attempt: from then on it is refused (429)
    # for every token, the scrape too, so the limiter's counter is read from the registry
    assert hub.client("not-a-key").get("/v1/offers").status_code == 401
    assert hub.client("not-a-key").get("/v1/offers").status_code == 429
    registry = hub.app.state.metrics.registry
    assert registry.get_sample_value("storeside_hub_rate_limited_total",
                                     {"limiter": "auth_failures"}) == 1


def test_labels_stay_bounded_and_carry_no_subject(hub: EmbeddedHub) -> None:
    admin = hub.admin()
    subjects = [subject(i) for i in range(30)]
    with httpx.Client(base_url=hub.url, timeout=10) as client:
        for i, subj in enumerate(subjects):
            client.get(f"/nope/{subj}/{i}")  # unmatched paths, each different
            client.request("BREW", f"/v1/members/{subj}/consent")  # an odd method
            admin.get(f"/v1/members/{subj}/consent")  # a template with a subject in it
            admin.get(f"/v1/stores/x{i}/feed/catalog")  # any store id an admin types
    text = admin.get("/metrics").text
    assert not any(s in text for s in subjects)
    routes = set(re.findall(r'route="([^"]*)"', text))
    assert routes <= {path for _, path in ROUTES} | {"unmatched"}, routes
    assert "unmatched" in routes and "/v1/members/{subject}/consent" in routes
    assert set(re.findall(r'method="([^"]*)"', text)) <= {"GET", "POST", "PUT", "DELETE",
                                                          "other"}
    stores = set(re.findall(r'store="([^"]*)"', text))
    assert stores <= {"s1", "s2"}, stores  # registered stores only
    series = [line for line in text.splitlines() if line.startswith("storeside_hub_")]
    assert len(series) < 400, len(series)


def test_only_admin_and_viewer_may_scrape(hub: EmbeddedHub) -> None:
    for role, status in (("viewer", 200), ("catalog", 403), ("privacy", 403), ("app", 403)):
        answer = httpx.get(f"{hub.url}/metrics", headers=bearer(hub_token(hub.settings, role)))
        assert answer.status_code == status, role
    assert hub.store("s1").get("/metrics").status_code == 403
    assert httpx.get(f"{hub.url}/metrics").status_code == 401
