"""Property-based fuzzing of the inbound wire contract (``edge.messages.parse_inbound``).

Every inbound kind and channel (app check-in, geofence, beacon, app feedback, POS, staff
feedback) gets valid payloads and labelled mutations of them (tests/fuzz_payloads.py):
wrong types per field, 100 KB–1 MB strings, 1,000+ levels of nesting, invalid UTF-8,
non-JSON, JSON that is not an object, NaN/Infinity, unknown and missing fields, subjects
that differ from the topic, far-future and far-past timestamps. Properties: a payload
parses to its model or raises DeadLetter with a reason the label allows, never anything
else, and what a dead letter carries into logs is safe to log. Derandomized, so CI sees
the same examples every run; each test counts its examples and asserts the count.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.messages import (
    DEAD_LETTER_REASONS,
    ID_PATTERN,
    MODELS,
    DeadLetter,
    parse_inbound,
)
from tests.fuzz_payloads import CHANNELS, MUTATIONS, SUBJECTS, VALID, Generator, valid_body

PARSE_EXAMPLES = 4_000
ARBITRARY_EXAMPLES = 2_500
PARSE_REASONS = DEAD_LETTER_REASONS - {"handler_error"}
FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def fuzz(examples: int) -> settings:
    """The fixed-seed fuzz settings with this many examples."""
    return settings(FUZZ, max_examples=examples)

TALLY: Counter[str] = Counter()


def outcome(channel: str, payload: bytes, subject: str | None) -> str:
    """VALID or the dead-letter reason; any other exception fails the test."""
    kind = CHANNELS[channel][0]
    try:
        msg = parse_inbound(kind, payload, subject=subject)
    except DeadLetter as dead:
        assert dead.kind == kind
        assert dead.reason in PARSE_REASONS, dead.reason
        assert_loggable(dead)
        return dead.reason
    assert type(msg) is MODELS[kind]
    return VALID


def assert_loggable(dead: DeadLetter) -> None:
    """What a dead letter carries goes into a WARNING line and the published dead letter:
    no control characters or lone surrogates, bounded, and the event id a real id."""
    import re

    for text in (dead.detail, dead.event_id or ""):
        assert len(text) <= 300
        assert text.isprintable(), repr(text)
        text.encode("utf-8")  # no lone surrogates
    if dead.event_id is not None:
        assert re.fullmatch(ID_PATTERN, dead.event_id)


def test_every_mutation_gets_the_reason_its_label_allows() -> None:
    """Generated payloads of every channel and mutation: the reason is the right one."""
    seen: Counter[tuple[str, str]] = Counter()

    @fuzz(PARSE_EXAMPLES)
    @given(st.randoms(use_true_random=False), st.sampled_from(sorted(CHANNELS)),
           st.sampled_from(sorted(m for m in MUTATIONS if m != "bad_token")))
    def check(rng: random.Random, channel: str, mutation: str) -> None:
        case = Generator(rng).case(channel, mutation)
        got = outcome(channel, case.payload, case.subject)
        if case.expect == VALID:
            assert got == VALID, (mutation, got, case.payload[:200])
        else:
            assert got in case.expect, (mutation, got, case.expect, case.payload[:200])
        seen[(channel, mutation)] += 1

    check()
    TALLY["parse_labelled"] += sum(seen.values())
    assert sum(seen.values()) >= PARSE_EXAMPLES * 0.95
    # every channel met every mutation (derandomized: a fixed, reviewable spread)
    assert len(seen) == len(CHANNELS) * (len(MUTATIONS) - 1), sorted(set(seen))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                  max_size=4),
    max_leaves=20,
)
FIELD_NAMES = sorted({"v", "event_id", "ts", "extra", "lines",
                      *(name for fields in MODELS.values() for name in fields.model_fields)})


@st.composite
def arbitrary_payloads(draw: Any) -> tuple[str, bytes, str | None]:
    """A valid body with arbitrary JSON put into a few fields, or arbitrary bytes."""
    channel = draw(st.sampled_from(sorted(CHANNELS)))
    subject = SUBJECTS[0] if CHANNELS[channel][1] else None
    if draw(st.integers(0, 9)) == 0:
        return channel, draw(st.binary(max_size=300)), subject
    body = valid_body(random.Random(draw(st.integers(0, 2**32))), channel, subject)
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=3)):
        body[name] = draw(JSON)
    if body.get("lines") and isinstance(body["lines"], list) and draw(st.booleans()):
        body["lines"] = [draw(JSON) for _ in body["lines"][:3]]
    text = json.dumps(body, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return channel, text.encode("utf-8", "surrogatepass"), subject


def test_arbitrary_values_in_any_field_never_escape_as_another_exception() -> None:
    """Hypothesis' own JSON values (any type, NaN, huge ints, odd unicode) and raw bytes."""
    reasons: Counter[str] = Counter()

    @fuzz(ARBITRARY_EXAMPLES)
    @given(arbitrary_payloads())
    def check(drawn: tuple[str, bytes, str | None]) -> None:
        reasons[outcome(*drawn)] += 1

    check()
    TALLY["parse_arbitrary"] += sum(reasons.values())
    assert sum(reasons.values()) >= ARBITRARY_EXAMPLES * 0.95
    assert reasons[VALID] > 0 and reasons["invalid"] > 0 and reasons["bad_utf8"] > 0
    print(json.dumps({"parse_arbitrary": dict(reasons), "tally": dict(TALLY)}))


# ---------------------------------------------------------------- regressions found by fuzzing


def test_a_malformed_event_id_is_not_carried_into_the_dead_letter() -> None:
    """Found by the fuzzer: ``"event_id": "\\ud800"`` (a valid JSON escape) went into the
    dead letter as is; publishing it failed (lone surrogate, UTF-8 encode error) and a
    newline in it could forge log lines. Only a well-formed id is carried now."""
    for event_id in ("\ud800", "ok\n2026-01-01 CRITICAL forged", "a b", "x" * 65):
        body = {"v": 1, "event_id": event_id, "ts": 1_780_000_000, "subject": "cust-001",
                "transition": "teleport"}
        try:
            parse_inbound("geofence", json.dumps(body).encode(), subject="cust-001")
        except DeadLetter as dead:
            assert dead.reason == "invalid" and dead.event_id is None
            assert_loggable(dead)
        else:
            raise AssertionError("accepted")
    body = {"v": 1, "event_id": "gf-7", "ts": 1_780_000_000, "subject": "cust-001",
            "transition": "teleport"}
    try:
        parse_inbound("geofence", json.dumps(body).encode(), subject="cust-001")
    except DeadLetter as dead:
        assert dead.event_id == "gf-7"


def test_unknown_field_names_are_escaped_in_the_detail() -> None:
    """Found by the fuzzer: an unknown key is the sender's text and reached ``detail``
    (a log line, the dead-letter payload, the HTTP 422 body) raw, newlines included."""
    body = {"v": 1, "event_id": "gf-8", "ts": 1_780_000_000, "subject": "cust-001",
            "transition": "enter", "x\nCRITICAL forged": 1, "k" * 500: 3}
    try:
        parse_inbound("geofence", json.dumps(body).encode(), subject="cust-001")
    except DeadLetter as dead:
        assert dead.reason == "invalid"
        assert "\n" not in dead.detail and "x\\nCRITICAL" in dead.detail
        assert_loggable(dead)
    else:
        raise AssertionError("accepted")
