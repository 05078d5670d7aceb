"""Generated MQTT payloads for the fuzz tests: valid ones and labelled mutations of them.

One generator drives both fuzzers: the in-process hypothesis tests draw its ``random.Random``
with ``st.randoms()`` (so hypothesis chooses, replays and shrinks), the live run over
Mosquitto feeds it ``random.Random(SEED)`` (reproducible without hypothesis' engine, which
is not meant for generating 10,000 inputs outside a test). Each case carries what the edge
must make of it: ``VALID``, or the set of dead-letter reasons that are right for it, so a
test can assert the *reason*, not just "some refusal". Pure: no I/O.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from edge.messages import MAX_BASKET_LINES, MAX_PAYLOAD_BYTES, TS_MAX, TS_MIN

VALID: Final = "valid"
TOKEN_REFUSED: Final = "token_refused"  # valid JSON, refused by the check-in handler
REPLAY: Final = "replay"  # a valid payload sent again, byte for byte: no second effect
FAKE_TOKEN: Final = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJjdXN0LTAwMSJ9.c2lnbmF0dXJlLWJ5dGVz"
# topic channel → (parse kind, does the topic carry a subject)
CHANNELS: Final = {
    "checkin": ("checkin", True),
    "geofence": ("geofence", True),
    "beacon": ("beacon", True),
    "app_feedback": ("feedback", True),
    "pos": ("pos", False),
    "staff_feedback": ("feedback", False),
}
SUBJECTS: Final = tuple(f"fz-{i:03d}" for i in range(40))
JSON_TYPES: Final = ("null", "bool", "int", "float", "str", "list", "dict")
# JSON types each field accepts ("num": int or float, never bool); checked by parse_inbound
FIELDS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "checkin": {"token": ("str",), "subject": ("str", "null")},
    "geofence": {"subject": ("str",), "transition": ("str",)},
    "beacon": {"subject": ("str",), "zone": ("str",), "beacon_id": ("str",), "rssi": ("int",)},
    "pos": {"basket_id": ("str",), "subject": ("str", "null"), "lines": ("list",)},
    "feedback": {"subject": ("str",), "visit_id": ("str", "null"), "product_id": ("str",),
                 "action": ("str",), "channel": ("str",), "offer_id": ("str", "null")},
}
COMMON: Final = {"event_id": ("str",), "ts": ("int", "float")}
OPTIONAL: Final = {"checkin": {"subject"}, "pos": {"subject"},
                   "feedback": {"visit_id", "offer_id"}}
ID_CHARS: Final = string.ascii_letters + string.digits + "_.:-"


@dataclass(frozen=True)
class Case:
    """One payload on one topic and what the edge must do with it."""

    channel: str  # a key of CHANNELS
    subject: str | None  # the topic's subject level (None on shared topics)
    payload: bytes
    expect: str | frozenset[str]  # VALID, TOKEN_REFUSED or the acceptable dead-letter reasons
    mutation: str
    event_id: str | None = None  # of a VALID case (replays, SQLite checks)

    @property
    def kind(self) -> str:
        return CHANNELS[self.channel][0]

    @property
    def rejected(self) -> bool:
        return isinstance(self.expect, frozenset)


def ident(rng: random.Random, prefix: str = "", n: int = 12) -> str:
    return prefix + "".join(rng.choice(ID_CHARS) for _ in range(rng.randint(1, n)))


def subject_like(rng: random.Random) -> str:
    return rng.choice("abcdefgh") + "".join(
        rng.choice(string.ascii_letters + string.digits + "_.-") for _ in range(rng.randint(2, 20))
    )


def ts_valid(rng: random.Random) -> float | int:
    """Anywhere in the accepted window: far past, far future, out of order, ints too."""
    pick = rng.random()
    if pick < 0.15:
        return rng.choice((TS_MIN, TS_MAX, int(TS_MIN), int(TS_MAX)))
    if pick < 0.3:
        return rng.randint(int(TS_MIN), int(TS_MAX))
    return rng.uniform(TS_MIN, TS_MAX)


def valid_body(rng: random.Random, channel: str, subject: str | None,
               token: Callable[[str], str] | None = None, seq: int = 0) -> dict[str, Any]:
    """A payload parse_inbound accepts on ``channel`` (optional fields sometimes left out);
    ``seq`` makes the event id unique even when the random part repeats."""
    kind = CHANNELS[channel][0]
    body: dict[str, Any] = {"v": 1, "event_id": ident(rng, f"fz{seq}-", 40), "ts": ts_valid(rng)}
    person = subject or rng.choice(SUBJECTS)
    if kind == "checkin":
        body["token"] = token(person) if token is not None else FAKE_TOKEN
        if rng.random() < 0.2:
            body["subject"] = subject
    elif kind == "geofence":
        body.update(subject=subject, transition=rng.choice(("enter", "dwell", "exit")))
    elif kind == "beacon":
        body.update(subject=subject, zone=rng.choice(("dairy", "drinks", "z-1", "A.b_c")),
                    beacon_id=ident(rng, "b"), rssi=rng.randint(-127, 20))
    elif kind == "pos":
        body["basket_id"] = ident(rng, "till-")
        if rng.random() < 0.7:
            body["subject"] = rng.choice((*SUBJECTS[:5], None))
        body["lines"] = [
            {"product_id": ident(rng, "p"), "quantity": rng.randint(1, 10_000),
             "unit_price": rng.choice((None, round(rng.uniform(0, 1e6), 2), rng.randint(0, 99)))}
            for _ in range(rng.choice((1, 1, 2, 3, rng.randint(1, MAX_BASKET_LINES))))
        ]
    else:
        body.update(subject=person, product_id=ident(rng, "p"),
                    action=rng.choice(("accepted", "dismissed", "bought", "redeemed")),
                    channel="app" if subject is not None else "staff")
        for name in ("visit_id", "offer_id"):
            if rng.random() < 0.6:
                body[name] = rng.choice((None, ident(rng, "x")))
    return body


def json_value(rng: random.Random, kind: str | None = None, depth: int = 0) -> Any:
    """A JSON value of ``kind`` (random if None): odd strings, big and tiny numbers."""
    kind = kind or rng.choice(JSON_TYPES)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice((0, -1, 2**31, -(2**63), 10**30, rng.randint(-10**6, 10**6)))
    if kind == "float":
        return rng.choice((0.5, -1e-300, 1.5e308, 1780000000.25, rng.uniform(-1e9, 1e9)))
    if kind == "str":
        return rng.choice(("", " ", "1", "true", "null", "\u0000", "é" * 3, "\U0001F600",
                           "a/b/#", "\n\r\t", "x" * rng.randint(65, 300),
                           "\ud800", "cust-001\n"))
    if depth > 2:
        return []
    if kind == "list":
        return [json_value(rng, None, depth + 1) for _ in range(rng.randint(0, 3))]
    return {ident(rng): json_value(rng, None, depth + 1) for _ in range(rng.randint(0, 3))}


def encode(obj: Any) -> bytes:
    """As a client would send it: compact or spaced, keys in their order."""
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


@dataclass
class Generator:
    """Cases for the edge's inbound topics. ``token(subject)`` mints a real check-in token
    (live and handler tests); without it check-ins carry a JWT-shaped fake."""

    rng: random.Random
    token: Callable[[str], str] | None = None
    bad_token: Callable[[random.Random, str], str] | None = None
    huge_max: int = 1_000_000
    max_bytes: int = MAX_PAYLOAD_BYTES
    replay_rate: float = 0.05
    seq: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    sent_valid: list[Case] = field(default_factory=list)

    def next(self, channel: str | None = None) -> Case:
        """A fresh case, or now and then one of the valid ones again (a replay)."""
        if self.sent_valid and self.rng.random() < self.replay_rate:
            old = self.rng.choice(self.sent_valid)  # of any channel
            self.counts["replay"] = self.counts.get("replay", 0) + 1
            return replace(old, expect=REPLAY, mutation="replay")
        case = self.case(channel)
        if case.expect == VALID:
            self.sent_valid.append(case)
        return case

    def case(self, channel: str | None = None, mutation: str | None = None) -> Case:
        rng = self.rng
        channel = channel or rng.choice(tuple(CHANNELS))
        kind, has_subject = CHANNELS[channel]
        subject = rng.choice(SUBJECTS) if has_subject else None
        self.seq += 1
        body = valid_body(rng, channel, subject, self.token, self.seq)
        names = [m for m in MUTATIONS if m != "bad_token" or (kind == "checkin" and self.bad_token)]
        mutation = mutation or rng.choice(names)
        self.counts[mutation] = self.counts.get(mutation, 0) + 1
        payload, expect = MUTATIONS[mutation](self, body, kind, subject)
        if len(payload) > self.max_bytes:  # checked before anything is decoded
            expect = frozenset({"too_large"})
        event_id = body.get("event_id") if expect == VALID else None
        return Case(channel, subject, payload, expect, mutation, event_id)


Expect = str | frozenset[str]
Mutation = Callable[[Generator, dict[str, Any], str, "str | None"], tuple[bytes, Expect]]


def _r(*reasons: str) -> frozenset[str]:
    return frozenset(reasons)


def m_valid(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    if g.rng.random() < 0.3:  # same value, other spelling: spaces, escapes, key order
        items = list(body.items())
        g.rng.shuffle(items)
        text = json.dumps(dict(items), indent=g.rng.choice((None, 1)), ensure_ascii=True)
        return text.replace('"v"', '"\\u0076"').encode(), VALID
    return encode(body), VALID


def m_wrong_type(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    fields = {**COMMON, **FIELDS[kind], "v": ("int",)}
    name = g.rng.choice(sorted(fields))
    allowed = set(fields[name]) | ({"int"} if "float" in fields[name] else set())
    wrong = g.rng.choice([t for t in JSON_TYPES if t not in allowed])
    body[name] = json_value(g.rng, wrong)
    if name == "v":
        return encode(body), _r("schema_version")
    if kind == "checkin" and name == "subject" and subject is not None:
        return encode(body), _r("subject_mismatch")
    return encode(body), _r("invalid")


def m_huge_string(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    size = g.rng.randint(100_000, g.huge_max)
    body[g.rng.choice(sorted({*FIELDS[kind], "event_id"}))] = "x" * size
    return encode(body), _r("too_large")


def m_deep(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    depth = g.rng.randint(1_000, 7_000)
    opener, closer = g.rng.choice((("[", "]"), ('{"a":', "}")))
    nest = opener * depth + "1" + closer * depth
    if len(nest) > 16_000:
        nest = "[" * depth + "]" * depth
    if g.rng.random() < 0.3:
        return nest.encode(), _r("bad_json", "not_object", "schema_version")
    text = encode(body).decode()
    field = g.rng.choice(sorted({*FIELDS[kind], "extra"}))
    return (text[:-1] + f', "{field}": {nest}}}').encode(), _r("bad_json", "invalid",
                                                               "subject_mismatch")


def m_bad_utf8(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    raw = encode(body)
    bad = g.rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80",
                        b"\x80", b"\xe2\x82"))
    at = g.rng.randint(0, len(raw))
    return raw[:at] + bad + raw[at:], _r("bad_utf8")


def m_not_json(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    raw = encode(body)
    choice = g.rng.randrange(6)
    if choice == 0:
        return raw[: g.rng.randint(0, len(raw) - 1)], _r("bad_json")
    if choice == 1:
        return b"\xef\xbb\xbf" + raw, _r("bad_json")  # a BOM
    if choice == 2:
        return raw + b" trailing", _r("bad_json")
    if choice == 3:
        return g.rng.choice((b"", b" ", b"{", b"nul", b"{'v': 1}", b"<xml/>")), _r("bad_json")
    if choice == 4:  # NaN / Infinity where a number goes
        name = "rssi" if kind == "beacon" else "ts"
        spelled = f'"{name}": {json.dumps(body[name])}'
        text = raw.decode().replace(spelled, f'"{name}": ' + g.rng.choice(
            ("NaN", "Infinity", "-Infinity")), 1)
        return text.encode(), _r("bad_json")
    noise = bytes(g.rng.randrange(256) for _ in range(g.rng.randint(1, 200)))
    return noise, _r("bad_utf8", "bad_json", "not_object", "schema_version", "invalid")


def m_top_level(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    value = g.rng.choice(([body], [], "text", 1, 1.5, None, True, [1, 2]))
    return encode(value), _r("not_object")


def m_unknown_field(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    name = g.rng.choice(("extra", "V", "subject_", "__proto__", "\ud800", "é", "x" * 300, ""))
    body[name] = json_value(g.rng)
    return encode(body), _r("invalid")


def m_missing(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    name = g.rng.choice(sorted(body))
    del body[name]
    if name == "v":
        return encode(body), _r("schema_version")
    if name in OPTIONAL.get(kind, ()):
        return encode(body), VALID
    return encode(body), _r("invalid")


def m_out_of_range(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    rng = g.rng
    options: list[tuple[str, Any]] = [
        ("ts", rng.choice((0, -1, 1e300, 1e10, 1_780_000_000_000, TS_MAX + 1, TS_MIN - 0.5))),
        ("event_id", rng.choice(("", "x" * 65, "a b", "a/b", "é", "id\n"))),
        ("v", rng.choice((0, 2, -1, 10**20))),
    ]
    if kind == "beacon":
        options += [("rssi", rng.choice((-128, 21, 10**9))), ("zone", rng.choice(("", "z" * 33))),
                    ("beacon_id", "b" * 65)]
    if kind == "checkin":
        options.append(("token", rng.choice(("not-a-jwt", "a.b", "a.b.c", "é.b.c", "a" * 5000))))
    if kind == "geofence":
        options.append(("transition", rng.choice(("ENTER", "leave", ""))))
    if kind == "feedback":
        options += [("action", "liked"), ("channel", "sms"), ("product_id", "")]
    if kind == "pos":
        line = {"product_id": "p1", "quantity": 1}
        options += [("lines", []), ("lines", [line] * (MAX_BASKET_LINES + 1)),
                    ("lines", [{**line, "quantity": rng.choice((0, -3, 10_001))}]),
                    ("lines", [{**line, "unit_price": rng.choice((-0.01, 1e6 + 1))}]),
                    ("lines", [{**line, "colour": "red"}]), ("subject", "bad subject")]
    name, value = rng.choice(options)
    body[name] = value
    if name == "v":
        return encode(body), _r("schema_version")
    return encode(body), _r("invalid")


def m_subject(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    if subject is None:  # shared topics: the staff channel on an app-only field
        if kind == "feedback":
            body["channel"] = "sms"
        else:
            body["subject"] = "not a subject/+"
        return encode(body), _r("invalid")
    body["subject"] = g.rng.choice([s for s in SUBJECTS if s != subject])
    if kind == "feedback" and g.rng.random() < 0.5:  # own subject, staff channel: refused
        body.update(subject=subject, channel="staff")
        return encode(body), _r("invalid")
    return encode(body), _r("subject_mismatch")


def m_bad_token(g: Generator, body: dict[str, Any], kind: str, subject: str | None) -> Any:
    assert g.bad_token is not None and subject is not None
    body["token"] = g.bad_token(g.rng, subject)
    return encode(body), TOKEN_REFUSED


MUTATIONS: Final[dict[str, Mutation]] = {
    "valid": m_valid,
    "valid_again": m_valid,  # valid traffic is the most common case
    "wrong_type": m_wrong_type,
    "huge_string": m_huge_string,
    "deep_nesting": m_deep,
    "bad_utf8": m_bad_utf8,
    "not_json": m_not_json,
    "top_level": m_top_level,
    "unknown_field": m_unknown_field,
    "missing_field": m_missing,
    "out_of_range": m_out_of_range,
    "subject": m_subject,
    "bad_token": m_bad_token,
}
