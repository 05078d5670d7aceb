"""The wire contract: every inbound payload validated once, every refusal a reason code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.messages import (
    DEAD_LETTER_REASONS,
    INBOUND_KINDS,
    MAX_PAYLOAD_BYTES,
    BeaconMsg,
    CheckinMsg,
    DeadLetter,
    FeedbackMsg,
    GeofenceMsg,
    Inbound,
    PosBasketMsg,
    build_app_offer,
    build_dead_letter,
    build_staff_recommendation,
    build_status,
    parse_inbound,
)
from edge.topics import Topics

DOCS = Path(__file__).resolve().parent.parent / "docs" / "mqtt.md"
TS = 1_780_000_000.5
SUBJECT = "cust-001"
TOKEN = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjdXN0LTAwMSJ9.c2lnbmF0dXJlLWJ5dGVz"

VALID: dict[str, dict[str, Any]] = {
    "checkin": {"v": 1, "event_id": "ck-1", "ts": TS, "token": TOKEN},
    "geofence": {"v": 1, "event_id": "gf-1", "ts": TS, "subject": "cust-001",
                 "transition": "dwell"},
    "beacon": {"v": 1, "event_id": "bc-1", "ts": TS, "subject": "cust-001", "zone": "dairy",
               "beacon_id": "b:0a:11", "rssi": -67},
    "pos": {"v": 1, "event_id": "pos-1", "ts": TS, "basket_id": "till3-0042",
            "subject": "cust-001",
            "lines": [{"product_id": "4714981010038", "quantity": 2, "unit_price": 39.0},
                      {"product_id": "4710088410139", "quantity": 1, "unit_price": None}]},
    "feedback": {"v": 1, "event_id": "fb-1", "ts": TS, "subject": "cust-001",
                 "visit_id": "v-9", "product_id": "4714981010038", "action": "accepted",
                 "channel": "staff"},
}
TYPES = {"checkin": CheckinMsg, "geofence": GeofenceMsg, "beacon": BeaconMsg,
         "pos": PosBasketMsg, "feedback": FeedbackMsg}


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def rejected(kind: str, payload: bytes, **kwargs: Any) -> DeadLetter:
    with pytest.raises(DeadLetter) as caught:
        parse_inbound(kind, payload, **kwargs)
    assert caught.value.kind == kind
    assert caught.value.reason in DEAD_LETTER_REASONS
    return caught.value


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_payloads_parse_to_their_model(kind: str) -> None:
    msg = parse_inbound(kind, raw(VALID[kind]))
    assert type(msg) is TYPES[kind]
    assert msg.event_id == VALID[kind]["event_id"]


def test_integer_timestamp_is_a_float_but_strings_are_not_numbers() -> None:
    assert parse_inbound("geofence", raw({**VALID["geofence"], "ts": 1_780_000_000})).ts == (
        1_780_000_000.0
    )
    dead = rejected("geofence", raw({**VALID["geofence"], "ts": "1780000000"}))
    assert (dead.reason, dead.detail) == ("invalid", "ts: float_type")


def test_size_is_checked_before_decoding() -> None:
    assert rejected("beacon", b"\xff" * (MAX_PAYLOAD_BYTES + 1)).reason == "too_large"
    small = rejected("beacon", raw(VALID["beacon"]), max_bytes=20)
    assert small.reason == "too_large"
    assert "> 20 bytes" in small.detail


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", "bad_utf8"),
        (b'{"v": 1, "subject": "caf\xc3"}', "bad_utf8"),
        (b"{bad json", "bad_json"),
        (b"", "bad_json"),
        (b'{"v": NaN}', "bad_json"),
        (b'{"v": Infinity}', "bad_json"),
        (b"[" * 8_000 + b"]" * 8_000, "bad_json"),  # nesting bomb inside the size limit
        (b"\xef\xbb\xbf{}", "bad_json"),  # UTF-8 BOM
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (b"42", "not_object"),
        (b"null", "not_object"),
        (b"{}", "schema_version"),
        (b'{"v": 2, "event_id": "x"}', "schema_version"),
        (b'{"v": "1"}', "schema_version"),
        (b'{"v": true}', "schema_version"),
        (b'{"v": 1.0}', "schema_version"),
    ],
)
def test_structural_rejections(payload: bytes, reason: str) -> None:
    assert rejected("geofence", payload).reason == reason


def test_unknown_kind_is_an_unknown_topic() -> None:
    assert rejected("unknown", raw(VALID["beacon"])).reason == "unknown_topic"


def test_schema_version_rejection_keeps_the_event_id_for_tracing() -> None:
    dead = rejected("beacon", raw({**VALID["beacon"], "v": 2}))
    assert dead.event_id == "bc-1"
    assert "v=2" in dead.detail


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        ("beacon", {"rssi": True}, "rssi"),
        ("beacon", {"rssi": -67.5}, "rssi"),
        ("beacon", {"rssi": -300}, "rssi"),
        ("beacon", {"zone": "dairy/aisle"}, "zone"),
        ("beacon", {"extra": 1}, "extra"),
        ("geofence", {"transition": "teleport"}, "transition"),
        ("geofence", {"event_id": "has space"}, "event_id"),
        ("geofence", {"event_id": "x" * 65}, "event_id"),
        ("geofence", {"ts": 1_780_000_000_000}, "ts"),  # milliseconds
        ("geofence", {"ts": 0}, "ts"),
        ("geofence", {"subject": "a/b"}, "subject"),
        ("geofence", {"subject": "+"}, "subject"),
        ("checkin", {"token": "not a jwt"}, "token"),
        ("checkin", {"token": "a.b.c" * 2000}, "token"),
        ("pos", {"lines": []}, "lines"),
        ("pos", {"lines": [{"product_id": "p1", "quantity": 1}] * 201}, "lines"),
        ("pos", {"lines": [{"product_id": "p1", "quantity": "2"}]}, "lines.0.quantity"),
        ("pos", {"lines": [{"product_id": "p1", "quantity": 0}]}, "lines.0.quantity"),
        ("pos", {"lines": [{"product_id": "p1", "quantity": 1, "unit_price": -1}]},
         "lines.0.unit_price"),
        ("feedback", {"action": "loved"}, "action"),
        ("feedback", {"channel": "email"}, "channel"),
    ],
)
def test_wrong_types_and_values_name_the_field(
    kind: str, change: dict[str, Any], field: str
) -> None:
    dead = rejected(kind, raw({**VALID[kind], **change}))
    assert dead.reason == "invalid"
    assert dead.detail.split(":")[0] == field


def test_missing_field_is_invalid() -> None:
    payload = dict(VALID["beacon"])
    del payload["rssi"]
    dead = rejected("beacon", raw(payload))
    assert (dead.reason, dead.detail) == ("invalid", "rssi: missing")


def test_detail_never_contains_the_offending_value() -> None:
    dead = rejected("geofence", raw({**VALID["geofence"], "subject": "Alice Smith"}))
    assert dead.reason == "invalid"
    assert "Alice" not in dead.detail and "Alice" not in str(dead)


def test_payload_subject_must_match_the_topic_subject() -> None:
    ok = parse_inbound("beacon", raw(VALID["beacon"]), subject="cust-001")
    assert ok.subject == "cust-001"  # type: ignore[union-attr]
    dead = rejected("beacon", raw(VALID["beacon"]), subject="cust-002")
    assert dead.reason == "subject_mismatch"


def test_checkin_takes_its_subject_from_the_topic() -> None:
    msg = parse_inbound("checkin", raw(VALID["checkin"]), subject="cust-001")
    assert isinstance(msg, CheckinMsg) and msg.subject == "cust-001"
    assert parse_inbound("checkin", raw(VALID["checkin"])).subject is None  # kiosk / HTTP
    claimed = raw({**VALID["checkin"], "subject": "cust-002"})
    assert rejected("checkin", claimed, subject="cust-001").reason == "subject_mismatch"


def test_app_feedback_must_say_channel_app() -> None:
    app = {**VALID["feedback"], "channel": "app"}
    assert parse_inbound("feedback", raw(app), subject="cust-001")
    dead = rejected("feedback", raw(VALID["feedback"]), subject="cust-001")
    assert dead.reason == "invalid" and dead.detail.startswith("channel")


def test_messages_are_frozen() -> None:
    msg = parse_inbound("geofence", raw(VALID["geofence"]))
    with pytest.raises(ValueError, match="frozen"):
        msg.subject = "other"  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([*sorted(INBOUND_KINDS), "nope"]), payload=st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_anything_but_a_dead_letter(
    kind: str, payload: bytes
) -> None:
    try:
        parse_inbound(kind, payload)
    except DeadLetter as dead:
        assert dead.reason in DEAD_LETTER_REASONS


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(sorted(INBOUND_KINDS)), key=st.text(max_size=10), value=JSONISH)
def test_mutated_valid_payloads_parse_or_are_refused_with_a_reason(
    kind: str, key: str, value: Any
) -> None:
    payload = {**VALID[kind], key: value}
    try:
        parse_inbound(kind, raw(payload))
    except DeadLetter as dead:
        assert dead.reason in {"invalid", "schema_version"}


def test_dead_letter_rejects_unknown_reason_codes() -> None:
    with pytest.raises(ValueError, match="unknown dead-letter reason"):
        DeadLetter("beacon", "whatever")


# ------------------------------------------------------------------------- outbound


def test_builders_stamp_version_id_and_time() -> None:
    rec = build_staff_recommendation(
        visit_id="v-1", subject="cust-001", zone=None, trigger="checkin", source="popular",
        model_version=None, suggestions=[],
    )
    assert rec["v"] == 1 and re.fullmatch(r"[0-9a-f]{32}", rec["event_id"])
    assert rec["ts"] > TS - 10**8 and rec["display_name"] is None and rec["profile"] is None
    offer = build_app_offer(visit_id="v-1", product_id="p", name="Tea", price=1.5, reasons=[],
                            event_id="fixed", ts=TS)
    assert (offer["event_id"], offer["ts"], offer["offer_id"]) == ("fixed", TS, None)
    status = build_status("degraded", model_version="m1", reason="model_missing")
    assert (status["state"], status["model_version"], status["reason"]) == (
        "degraded", "m1", "model_missing"
    )


def test_builders_refuse_values_outside_the_contract() -> None:
    common: dict[str, Any] = dict(visit_id="v", subject="cust-001", zone=None,
                                  model_version=None, suggestions=[])
    with pytest.raises(ValueError, match="trigger"):
        build_staff_recommendation(trigger="whim", source="model", **common)
    with pytest.raises(ValueError, match="source"):
        build_staff_recommendation(trigger="refresh", source="guess", **common)
    with pytest.raises(ValueError, match="state"):
        build_status("sleeping")


def test_dead_letter_record_carries_metadata_not_content() -> None:
    inbound = Inbound("beacon", "p/in/app/cust-001/beacon", b'{"secret": "Alice"}', 0, 0, 0.0)
    record = build_dead_letter(inbound, DeadLetter("beacon", "invalid", "rssi: missing", "e1"))
    assert "Alice" not in json.dumps(record)
    assert (record["reason"], record["size"], record["event_id"]) == ("invalid", 19, "e1")


# ------------------------------------------------------------ docs/mqtt.md stays true

EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.S)


def doc_examples() -> dict[str, Any]:
    return {name: json.loads(body) for name, body in EXAMPLE.findall(DOCS.read_text())}


def test_every_documented_inbound_example_is_valid() -> None:
    examples = doc_examples()
    assert set(examples) >= INBOUND_KINDS
    for kind in INBOUND_KINDS:
        parse_inbound(kind, raw(examples[kind]))


def test_documented_outbound_examples_have_the_builders_fields() -> None:
    examples = doc_examples()
    built = {
        "staff_recommendation": build_staff_recommendation(
            visit_id="v", subject="cust-001", zone=None, trigger="checkin", source="model",
            model_version="m", suggestions=[],
        ),
        "app_offer": build_app_offer(visit_id="v", product_id="p", name="n", price=1.0,
                                     reasons=[]),
        "dead_letter": build_dead_letter(
            Inbound("pos", "t", b"", 1, 1, 0.0), DeadLetter("pos", "bad_json")
        ),
    }
    for name, payload in built.items():
        assert set(examples[name]) == set(payload), name
    status = examples["status"]
    assert set(build_status("online")) <= set(status)


# ------------------------------------------------------------------------- topic tree


def test_topic_tree_and_routing() -> None:
    topics = Topics("acme", "s042")
    assert topics.prefix == "storeside/acme/s042"
    assert Topics("storeside/acme/s042").prefix == topics.prefix
    assert Topics("acme", "s042", prefix="chains/{chain}/stores/{store}").prefix == (
        "chains/acme/stores/s042"
    )
    assert topics.checkin(SUBJECT) == "storeside/acme/s042/in/app/cust-001/checkin"
    assert topics.app_offers(SUBJECT) == "storeside/acme/s042/app/cust-001/offers"
    assert topics.staff_recommendations == "storeside/acme/s042/staff/recommendations"
    assert (topics.status, topics.dead_letters) == (
        "storeside/acme/s042/status", "storeside/acme/s042/deadletter"
    )
    routed = {
        topics.checkin(SUBJECT): ("checkin", SUBJECT),
        topics.geofence(SUBJECT): ("geofence", SUBJECT),
        topics.beacon(SUBJECT): ("beacon", SUBJECT),
        topics.feedback(SUBJECT): ("feedback", SUBJECT),
        topics.feedback(): ("feedback", None),
        topics.pos: ("pos", None),
    }
    for topic, expected in routed.items():
        assert topics.route(topic) == expected
        assert topics.kind_of(topic) == expected[0]
        assert any(mqtt.topic_matches_sub(f, topic) for f, _ in topics.subscriptions())
    for stray in (
        topics.staff_recommendations, topics.status, topics.app_offers(SUBJECT),
        "storeside/acme/s042/in/app/cust-001/pos", "storeside/acme/s042/in/app/x/checkin",
        "storeside/acme/s042/in/app/cust-001/checkin/extra", "storeside/other/s042/in/pos",
    ):
        assert topics.kind_of(stray) is None, stray
    assert dict(topics.subscriptions())[f"{topics.prefix}/in/app/+/beacon"] == 0


@pytest.mark.parametrize("bad", ["a/b", "", "a+", "#"])
def test_topic_levels_are_validated(bad: str) -> None:
    with pytest.raises(ValueError):
        Topics(bad, "s1")
    with pytest.raises(ValueError):
        Topics("acme", "s1").checkin(bad)


def test_bad_prefixes_are_refused() -> None:
    for prefix in ("/abs", "trailing/", "a//b", "a/+/b", "a/#"):
        with pytest.raises(ValueError):
            Topics(prefix)
