"""The wire contract of the edge: inbound MQTT payloads, outbound payload builders.

Pure (no I/O): everything that crosses the broker is validated here once, so handlers
only ever see well-typed, bounded messages and every rejection has a reason code that
can be counted. Documented field by field in docs/mqtt.md; tests keep the two in step.

Why strict pydantic with ``extra="forbid"``: the apps and the POS are written by other
teams; a silently coerced ``"12"`` or an unknown field hides a contract drift that we
would rather see as a counted dead letter on day one.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 16_384
# MQTT 5 Receive Maximum the edge announces: the broker never has more un-acked QoS 1
# messages in flight to us than this, so the hand-off queue reserves this many slots.
RECEIVE_MAXIMUM: Final = 1_000



def receive_maximum_for(queue_size: int | None, requested: int = RECEIVE_MAXIMUM) -> int:
    """The Receive Maximum a hand-off queue of ``queue_size`` can always absorb (at most
    half of it, the rest is for lossy QoS 0 traffic). Bridge and dispatcher both use it,
    so the reserve always matches what the broker may have in flight."""
    if queue_size is None:
        return requested
    return max(1, min(requested, queue_size // 2))


# Pseudonymous subject: also a topic level, so never '/', '+', '#' or whitespace.
SUBJECT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$"
ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
ZONE_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,32}$"
JWT_PATTERN: Final = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
# Epoch seconds between 2001-09-09 and 2100-01-01: catches milliseconds and zeros.
TS_MIN: Final = 1_000_000_000.0
TS_MAX: Final = 4_102_444_800.0
MAX_BASKET_LINES: Final = 200

DEAD_LETTER_REASONS: Final = frozenset(
    {
        "too_large",
        "bad_utf8",
        "bad_json",
        "not_object",
        "schema_version",
        "invalid",
        "subject_mismatch",
        "unknown_topic",
        "handler_error",  # set by the dispatcher, never by parse_inbound
        "rate_limited",  # a member over rate_limits.subject_checkins_per_min (edge.service)
    }
)

Subject = Annotated[str, Field(pattern=SUBJECT_PATTERN)]
EventId = Annotated[str, Field(pattern=ID_PATTERN)]
ItemId = Annotated[str, Field(pattern=ID_PATTERN)]
Zone = Annotated[str, Field(pattern=ZONE_PATTERN)]
Ts = Annotated[float, Field(ge=TS_MIN, le=TS_MAX)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    v: Literal[1]
    event_id: EventId
    ts: Ts


class CheckinMsg(_Msg):
    """The app entered the store. ``subject`` is not sent on the wire by the app: the
    edge fills it from the per-subject topic so the handler can require
    ``token.sub == subject`` (a token can only be used on its owner's topic)."""

    token: Annotated[str, Field(min_length=16, max_length=4096, pattern=JWT_PATTERN)]
    subject: Subject | None = None


class GeofenceMsg(_Msg):
    subject: Subject
    transition: Literal["enter", "dwell", "exit"]


class BeaconMsg(_Msg):
    subject: Subject
    zone: Zone
    beacon_id: ItemId
    rssi: Annotated[int, Field(ge=-127, le=20)]


class BasketLine(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    product_id: ItemId
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    unit_price: Annotated[float, Field(ge=0, le=1_000_000)] | None = None


class PosBasketMsg(_Msg):
    basket_id: ItemId
    subject: Subject | None = None
    lines: Annotated[list[BasketLine], Field(min_length=1, max_length=MAX_BASKET_LINES)]


class FeedbackMsg(_Msg):
    subject: Subject
    visit_id: ItemId | None = None
    product_id: ItemId
    action: Literal["accepted", "dismissed", "bought", "redeemed"]
    channel: Literal["staff", "app"]
    offer_id: ItemId | None = None  # the store offer acted on (e.g. redeemed), if any


InboundMsg = CheckinMsg | GeofenceMsg | BeaconMsg | PosBasketMsg | FeedbackMsg

MODELS: Final[Mapping[str, type[_Msg]]] = {
    "checkin": CheckinMsg,
    "geofence": GeofenceMsg,
    "beacon": BeaconMsg,
    "pos": PosBasketMsg,
    "feedback": FeedbackMsg,
}
INBOUND_KINDS: Final = frozenset(MODELS)


@dataclass(slots=True)
class Inbound:
    """One raw MQTT delivery on its way from the network thread to the worker.

    ``session`` is the bridge's connection generation: an ack is only sent on the
    connection that delivered the message (MQTT forbids acking across connections; the
    broker redelivers un-acked messages after a reconnect anyway).
    """

    kind: str
    topic: str
    payload: bytes
    qos: int
    mid: int
    received_at: float  # time.monotonic() when the network thread got it
    subject: str | None = None  # from a per-subject topic, None otherwise
    session: int = 0
    dup: bool = False


class DeadLetter(Exception):
    """An inbound message we refuse, with a countable reason code."""

    def __init__(
        self, kind: str, reason: str, detail: str = "", event_id: str | None = None
    ) -> None:
        if reason not in DEAD_LETTER_REASONS:
            raise ValueError(f"unknown dead-letter reason {reason!r}")
        super().__init__(f"{kind}: {reason}" + (f" ({detail})" if detail else ""))
        self.kind = kind
        self.reason = reason
        self.detail = detail
        self.event_id = event_id


_EVENT_ID = re.compile(ID_PATTERN)


def _safe_event_id(value: Any) -> str | None:
    """The payload's event id for a dead letter only if it is a well-formed id: it goes
    into logs and the published dead letter, so a control character or a lone surrogate
    (valid JSON escapes) must not (log injection, a UTF-8 encode error on publish)."""
    return value if isinstance(value, str) and _EVENT_ID.fullmatch(value) else None


def _loc_part(part: str | int) -> str:
    """A field path element for ``detail``: unknown keys are the sender's text, so they
    are escaped (newlines, surrogates) and cut short."""
    return str(part) if isinstance(part, int) else repr(part)[1:-1][:40]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _describe(exc: ValidationError, limit: int = 3) -> str:
    """Which fields failed and why, never the offending values (they may be personal)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        loc = ".".join(_loc_part(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['type']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"+{more} more")
    return "; ".join(parts)[:300]


def parse_inbound(
    kind: str,
    payload: bytes,
    *,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    subject: str | None = None,
) -> InboundMsg:
    """Bytes from topic kind ``kind`` → a validated message, or raise DeadLetter.

    The size is checked before anything is decoded so an oversized payload costs
    nothing. ``subject`` is the subject level of a per-subject topic: the payload must
    name the same subject (the broker ACL only lets an app publish on its own topic).
    """
    model = MODELS.get(kind)
    if model is None:
        raise DeadLetter(kind, "unknown_topic")
    if len(payload) > max_bytes:
        raise DeadLetter(kind, "too_large", f"{len(payload)} > {max_bytes} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeadLetter(kind, "bad_utf8", f"byte {exc.start}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise DeadLetter(kind, "bad_json", type(exc).__name__) from None
    if not isinstance(obj, dict):
        raise DeadLetter(kind, "not_object", type(obj).__name__)
    event_id = _safe_event_id(obj.get("event_id"))
    version = obj.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        shown = repr(version)[:16] if version is not None else "missing"
        raise DeadLetter(
            kind, "schema_version", f"v={shown}, this edge speaks {SCHEMA_VERSION}", event_id
        )
    if kind == "checkin" and subject is not None:
        if obj.get("subject", subject) != subject:
            raise DeadLetter(kind, "subject_mismatch", "subject differs from topic", event_id)
        obj["subject"] = subject
    try:
        msg = model.model_validate(obj)
    except ValidationError as exc:
        raise DeadLetter(kind, "invalid", _describe(exc), event_id) from None
    if subject is not None and getattr(msg, "subject", subject) != subject:
        raise DeadLetter(kind, "subject_mismatch", "subject differs from topic", event_id)
    if subject is not None and isinstance(msg, FeedbackMsg) and msg.channel != "app":
        raise DeadLetter(kind, "invalid", "channel: must be 'app' on an app topic", event_id)
    return msg  # type: ignore[return-value]


# --------------------------------------------------------------------------- outbound


TRIGGERS: Final = frozenset({"checkin", "zone_dwell", "refresh", "restore"})
SOURCES: Final = frozenset({"model", "popular"})
STATES: Final = frozenset({"online", "offline", "degraded"})


def new_event_id() -> str:
    """A fresh id for an outbound event (32 hex chars, matches ID_PATTERN)."""
    return uuid.uuid4().hex


def _envelope(event_id: str | None, ts: float | None) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION,
        "event_id": event_id or new_event_id(),
        "ts": time.time() if ts is None else ts,
    }


def build_staff_recommendation(
    *,
    visit_id: str,
    subject: str,
    zone: str | None,
    trigger: str,
    source: str,
    model_version: str | None,
    suggestions: Sequence[Mapping[str, Any]],
    display_name: str | None = None,
    tier: str | None = None,
    profile: Mapping[str, Any] | None = None,
    consent: Sequence[str] = (),
    dwell_since: float | None = None,
    trigger_event_id: str | None = None,
    event_id: str | None = None,
    ts: float | None = None,
) -> dict[str, Any]:
    """Payload for ``<prefix>/staff/recommendations`` (also the tablet card on SSE).
    ``display_name`` must already be the anonymous tag unless the customer consented to
    ``staff_display`` (``edge.cards`` decides)."""
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {sorted(TRIGGERS)}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}")
    return {
        **_envelope(event_id, ts),
        "visit_id": visit_id,
        "subject": subject,
        "display_name": display_name,
        "tier": tier,
        "zone": zone,
        "dwell_since": dwell_since,
        "trigger": trigger,
        "trigger_event_id": trigger_event_id,
        "source": source,
        "model_version": model_version,
        "consent": sorted(consent),
        "suggestions": [dict(s) for s in suggestions],
        "profile": dict(profile) if profile is not None else None,
    }


def build_app_offer(
    *,
    visit_id: str,
    product_id: str,
    name: str,
    price: float,
    reasons: Sequence[Mapping[str, str]],
    offer_id: str | None = None,
    offer: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    ts: float | None = None,
) -> dict[str, Any]:
    """Payload for ``<prefix>/app/<subject>/offers`` (the subject is in the topic);
    ``offer`` is the applied store offer (``edge.offers.AppliedOffer.as_dict``)."""
    return {
        **_envelope(event_id, ts),
        "visit_id": visit_id,
        "product_id": product_id,
        "name": name,
        "price": price,
        "offer_id": offer_id,
        "offer": dict(offer) if offer is not None else None,
        "reasons": [dict(r) for r in reasons],
    }


def build_status(
    state: str, *, model_version: str | None = None, ts: float | None = None, **extra: Any
) -> dict[str, Any]:
    """Retained payload for ``<prefix>/status``; ``extra`` e.g. ``reason``, ``store``."""
    if state not in STATES:
        raise ValueError(f"state must be one of {sorted(STATES)}")
    return {
        "v": SCHEMA_VERSION,
        "state": state,
        "ts": time.time() if ts is None else ts,
        "model_version": model_version,
        **extra,
    }


def build_dead_letter(
    inbound: Inbound, error: DeadLetter, *, ts: float | None = None
) -> dict[str, Any]:
    """Payload for ``<prefix>/deadletter``: metadata only, never payload content."""
    return {
        "v": SCHEMA_VERSION,
        "ts": time.time() if ts is None else ts,
        "kind": error.kind,
        "topic": inbound.topic,
        "reason": error.reason,
        "detail": error.detail,
        "event_id": error.event_id,
        "size": len(inbound.payload),
        "qos": inbound.qos,
    }


# Letters -> "a", digits -> "9", non-ASCII bytes -> "?"; punctuation and controls kept.
_SHAPE = bytes(
    0x61 if chr(b).isalpha() else 0x39 if chr(b).isdigit() else b if b < 0x80 else 0x3F
    for b in range(256)
)


def payload_head(payload: bytes, limit: int = 64) -> str:
    """The SHAPE of the first ``limit`` bytes for a log line (repr, so control bytes stay
    visible): ``b'{"a": 9, "aaaaa": "aaaa.aaa@aaaaa.aaa'``. It shows what broke (a cut-off
    object, a stray quote) but never the content: a broken check-in may carry an e-mail or
    a name, and logs must hold no personal data (tests/test_privacy_logs.py)."""
    head = repr(payload[:limit].translate(_SHAPE))
    return head + ("…" if len(payload) > limit else "")
