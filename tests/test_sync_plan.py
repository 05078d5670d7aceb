"""The pure rules of the edge's hub sync (edge.sync_plan, edge.sync_items): no I/O."""

from __future__ import annotations

import json

import pytest

from edge.sync_announce import AnnounceQueue
from edge.sync_items import (
    BadItem,
    ProfileUpsert,
    Removal,
    catalog_change,
    erasure_item,
    offer_change,
    profile_change,
)
from edge.sync_metrics import SyncMetrics
from edge.sync_plan import (
    Backoff,
    BadResponse,
    JobState,
    OutboxRow,
    batches,
    due_jobs,
    events_body,
    halves,
    interpret_events_response,
    is_stale,
    latest_per_key,
    parse_page,
    seconds_until_due,
    staleness,
    worst_staleness,
)


def test_backoff_doubles_from_initial_to_the_cap() -> None:
    plain = Backoff(1.0, 60.0, jitter=0.0)
    assert [plain.delay(n, 0.5) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert plain.delay(10_000, 0.0) == 60.0  # no overflow after days offline


def test_backoff_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    jittery = Backoff(1.0, 60.0, jitter=0.2)
    assert jittery.delay(3, 0.0) == 4.0
    assert jittery.delay(3, 0.999999) == pytest.approx(3.2, abs=1e-5)
    draws = [i / 100 for i in range(100)]
    delays = {jittery.delay(7, d) for d in draws}
    assert min(delays) >= 48.0 and max(delays) <= 60.0 and len(delays) == 100


def test_job_state_success_failure_and_more() -> None:
    backoff = Backoff(1.0, 60.0, 0.0)
    state = JobState()
    failed = state.failed(100.0, backoff, 0.3).failed(101.0, backoff, 0.3)
    assert failed == JobState(103.0, 2)
    assert failed.succeeded(110.0, 2.0) == JobState(112.0, 0)
    assert failed.succeeded(110.0, 2.0, more=True) == JobState(110.0, 0)  # drain at once


def test_due_jobs_respect_their_own_and_the_link_backoff() -> None:
    jobs = {"erasures": JobState(5.0), "profiles": JobState(10.0), "offers": JobState(0.0)}
    assert due_jobs(jobs, JobState(), 6.0) == ["erasures", "offers"]
    assert due_jobs(jobs, JobState(next_at=20.0, failures=3), 15.0) == []
    assert due_jobs(jobs, JobState(next_at=20.0, failures=3), 20.0) == list(jobs)
    assert seconds_until_due(jobs, JobState(), 3.0, cap_s=1.0) == 0.0
    assert seconds_until_due({"a": JobState(7.0)}, JobState(), 3.0, cap_s=10.0) == 4.0
    assert seconds_until_due({"a": JobState(7.0)}, JobState(9.0), 3.0, cap_s=10.0) == 6.0
    assert seconds_until_due({"a": JobState(70.0)}, JobState(), 3.0, cap_s=10.0) == 10.0


def test_batches_and_halves_keep_order_and_cover_everything() -> None:
    items = list(range(1203))
    split = batches(items, 500)
    assert [len(b) for b in split] == [500, 500, 203]
    assert [x for b in split for x in b] == items
    assert batches([], 500) == []
    with pytest.raises(ValueError):
        batches(items, 0)
    assert halves([1, 2, 3]) == [[1], [2, 3]]
    assert halves([1]) == [[1]]


def _row(seq: int, kind: str = "pos_basket", subject: str | None = "m-01") -> OutboxRow:
    payload = json.dumps({"basket_id": f"b{seq}", "lines": [{"product_id": "p1"}]})
    return OutboxRow(seq, f"e{seq}", kind, subject, payload, 1000.0 + seq)


def test_events_body_is_the_contract_json_with_the_stored_payload() -> None:
    body = json.loads(events_body([_row(1), _row(2, "recommendation", None)]))
    assert body == {"events": [
        {"event_id": "e1", "kind": "pos_basket", "subject": "m-01", "created_at": 1001.0,
         "payload": {"basket_id": "b1", "lines": [{"product_id": "p1"}]}},
        {"event_id": "e2", "kind": "impression", "subject": None, "created_at": 1002.0,
         "payload": {"basket_id": "b2", "lines": [{"product_id": "p1"}]}},
    ]}
    assert json.loads(events_body([])) == {"events": []}


def test_events_response_deletes_what_the_hub_answered_and_keeps_the_rest() -> None:
    sent = [_row(1), _row(2), _row(3), _row(4)]
    outcome = interpret_events_response(sent, {
        "accepted": ["e1", "e-not-sent"],
        "duplicates": ["e2"],
        "refused": [{"event_id": "e4", "reason": "erased"}],
    })
    assert outcome.delete == (1, 2, 4)
    assert outcome.keep == (3,)
    assert (outcome.accepted, outcome.duplicates) == (1, 1)
    assert outcome.refused == {"e4": "erased"}


@pytest.mark.parametrize("body", [
    [], {"accepted": "e1"}, {"accepted": [1]}, {"refused": [{"reason": "x"}]},
    {"refused": "e1"},
])
def test_events_response_off_contract_is_refused(body: object) -> None:
    with pytest.raises(BadResponse):
        interpret_events_response([_row(1)], body)


def test_parse_page_checks_the_cursor() -> None:
    page = parse_page({"items": [{"op": "upsert"}], "cursor": "42", "more": True}, "40")
    assert (page.cursor, page.more, len(page.items)) == ("42", True, 1)
    assert parse_page({"items": [], "cursor": "42", "more": True}, "42").more is False
    for bad in ({"items": [], "cursor": 42}, {"items": {}, "cursor": "1"},
                {"items": [], "cursor": "1", "more": "yes"}, "nope"):
        with pytest.raises(BadResponse):
            parse_page(bad, "0")
    with pytest.raises(BadResponse, match="went back"):
        parse_page({"items": [], "cursor": "3"}, "7")


def test_latest_per_key_keeps_the_final_change() -> None:
    items = [
        {"seq": 1, "subject": "m-a", "op": "upsert"},
        {"seq": 2, "subject": "m-b", "op": "upsert"},
        {"seq": 3, "subject": "m-a", "op": "delete"},
    ]
    assert [i["seq"] for i in latest_per_key(items, "subject")] == [2, 3]


def _profile_item(**over: object) -> dict[str, object]:
    item: dict[str, object] = {
        "op": "upsert", "seq": 5, "subject": "m-0a",
        "profile": {"first_name": "Ana", "tier": "gold", "birthday": "1990-04-01",
                    "preferences": {"brands": ["x"]},
                    "consent": {"personalize": True, "staff_display": True, "app_offers": False},
                    "home_store": "store-001"},
        "aggregates": {"baskets": 3, "total_spend": 42.5, "last_purchase_ts": 1700.0},
        "history": [{"basket_id": "b1", "ts": 1700.0, "product_id": "p1", "quantity": 2,
                     "price": 1.5, "category": "c1"}],
    }
    item.update(over)
    return item


def test_profile_change_upsert_and_delete() -> None:
    change = profile_change(_profile_item())
    assert isinstance(change, ProfileUpsert)
    assert change.consent == {"personalize": True, "staff_display": True, "app_offers": False}
    assert (change.baskets, change.total_spend, change.history[0].quantity) == (3, 42.5, 2.0)
    gone = profile_change({"op": "delete", "seq": 6, "subject": "m-0a", "reason": "erased"})
    assert gone == Removal("m-0a", "erased")


@pytest.mark.parametrize("over", [
    {"subject": ""}, {"op": "merge"}, {"profile": None}, {"history": "b1"},
    {"aggregates": {"baskets": float("nan")}},
    {"history": [{"basket_id": "b", "ts": "yesterday", "product_id": "p"}]},
])
def test_profile_change_refuses_malformed_items(over: dict[str, object]) -> None:
    with pytest.raises(BadItem):
        profile_change(_profile_item(**over))


def test_catalog_and_offer_changes() -> None:
    item = catalog_change({"op": "upsert", "product_id": "p1", "name": "Tea", "category": "c",
                           "price": 2.5, "stock": 4, "zone": "z1"})
    assert not isinstance(item, Removal) and item.stock == 4
    assert catalog_change({"op": "delete", "product_id": "p1"}) == Removal("p1", "deleted")
    for bad in ({"stock": -1}, {"stock": 1.5}, {"price": -2}, {"name": ""}):
        with pytest.raises(BadItem):
            catalog_change({"op": "upsert", "product_id": "p1", "name": "Tea", "price": 1,
                            "stock": 1, **bad})
    offer = offer_change({"op": "upsert", "offer_id": "o1", "category": "c", "discount_pct": 10,
                          "valid_from": "2024-01-01T00:00:00Z", "valid_to": 1704153600})
    assert not isinstance(offer, Removal)
    assert (offer.valid_from, offer.valid_to) == (1704067200.0, 1704153600.0)
    for bad in ({"category": None}, {"discount_pct": 120}, {"valid_to": 1},
                {"valid_from": "2024-01-01T00:00:00"}):
        with pytest.raises(BadItem):
            offer_change({"op": "upsert", "offer_id": "o1", "category": "c",
                          "discount_pct": 10, "valid_from": 1000, "valid_to": 2000, **bad})
    assert erasure_item({"erasure_id": "x1", "subject": "m-1"}).subject == "m-1"
    with pytest.raises(BadItem):
        erasure_item({"erasure_id": "x1"})


def test_staleness_per_feed_and_worst() -> None:
    per_feed = staleness({"profiles": 90.0, "catalog": 40.0}, now=100.0)
    assert per_feed == {"profiles": 10.0, "catalog": 60.0}
    assert worst_staleness(per_feed) == 60.0
    assert not is_stale(per_feed, stale_after_s=300)
    assert is_stale(per_feed, stale_after_s=30)
    never = staleness({"profiles": None, "catalog": 40.0}, now=100.0)
    assert never["profiles"] is None and worst_staleness(never) is None
    assert is_stale(never, stale_after_s=10_000)


def test_announce_queue_is_bounded_and_asks_once_per_window() -> None:
    metrics = SyncMetrics()
    now = [1000.0]
    queue = AnnounceQueue(2, metrics.announces, lambda: now[0], again_after_s=600)
    assert not queue
    assert queue.offer("m-1") and queue.offer("m-2")
    assert not queue.offer("m-1")  # already queued
    assert not queue.offer("m-3")  # no room: dropped, counted
    assert metrics.announces.labels("dropped")._value.get() == 1
    assert queue.pending() == ["m-1", "m-2"]
    queue.done("m-1", "sent")
    assert queue.pending() == ["m-2"]
    assert not queue.offer("m-1")  # asked 0 s ago
    now[0] += 601
    assert queue.offer("m-1")
