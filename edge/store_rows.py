"""Row types handed out by the edge store, and the checks applied to what goes in.

Rows are frozen so a profile or catalog item read on one thread and cached for ranking can't
be changed under another thread. Validation lives here (no I/O) so a malformed event is
refused with a reason code before any transaction starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from models.offer_terms import OfferTerms

CONSENT_PURPOSES = ("personalize", "staff_display", "app_offers")
CHANNELS = ("staff", "app")
DISMISSED = "dismissed"


class StoreInputError(ValueError):
    """Input the store refuses; ``reason`` is a short code for dead-letter metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Profile:
    subject: str
    first_name: str | None
    tier: str | None
    birthday: str | None  # YYYY-MM-DD
    preferences: dict[str, Any]  # {"sizes": {category: size}, "brands": [...], "notes": str}
    consent: dict[str, bool]  # {purpose: granted} for CONSENT_PURPOSES
    home_store: str | None

    def consents(self, purpose: str) -> bool:
        """A purpose missing from the record is not granted (privacy by default)."""
        return self.consent.get(purpose, False) is True


@dataclass(frozen=True, slots=True)
class Aggregates:
    subject: str
    baskets: int
    total_spend: float
    last_purchase_ts: float | None

    @property
    def mean_basket_spend(self) -> float:
        return self.total_spend / self.baskets if self.baskets > 0 else 0.0


@dataclass(frozen=True, slots=True)
class CatalogItem:
    product_id: str
    name: str
    category: str | None
    price: float
    stock: int
    zone: str | None
    # The style (product model) this SKU is a variant of; None: a style of its own. Last and
    # defaulted so positional constructors written before styles keep working.
    style_id: str | None = None

    def row(self, stamp: float) -> tuple[str, str, str | None, float, int, str | None,
                                         str | None, float]:
        """The item in CATALOG_UPSERT's parameter order, ``updated_at`` = ``stamp`` (seeding
        and the catalog feed write items the same way)."""
        return (self.product_id, self.name, self.category, float(self.price), self.stock,
                self.zone, self.style_id, stamp)


@dataclass(frozen=True, slots=True)
class Offer(OfferTerms):
    """An offer row of the edge store (its targeting lives in offer_segments/_subjects)."""


@dataclass(frozen=True, slots=True)
class VisitRecord:
    """One visit's row (``visits``): what the handlers write and the reader returns."""

    visit_id: str
    subject: str | None
    started_at: float
    ended_at: float | None
    zone: str | None
    confidence: float
    checked_in: bool

    def params(self) -> tuple[Any, ...]:
        require_text(self.visit_id, "bad_visit", "visit_id")
        require_number(self.confidence, "bad_visit", "confidence", minimum=0)
        return (self.visit_id, self.subject, self.started_at, self.ended_at, self.zone,
                self.confidence, int(self.checked_in))


@dataclass(frozen=True, slots=True)
class Impression:
    event_id: str
    visit_id: str
    subject: str | None
    product_id: str
    channel: str
    rank: int
    score: float
    relevance: float
    reasons: list[dict[str, Any]]
    ts: float


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    seq: int
    event_id: str
    kind: str
    payload: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class CapCounts:
    """What a customer has already been shown, for frequency caps across channels.

    A staff "dismissed" feedback counts as one more showing of that product (in the visit
    and in the day) and puts the product, and the other variants of its style, in
    ``dismissed_in_visit`` (who turned down the grey beanie does not want the navy one).
    """

    shown_in_visit: dict[str, int]
    dismissed_in_visit: frozenset[str]
    impressions_today: int
    app_offers_today: int  # distinct app offer events since day start
    app_offers_in_visit: int


# --------------------------------------------------------------------------- validation


def require_text(value: object, reason: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise StoreInputError(reason, f"{what} must be a non-empty string")
    return value


def require_number(value: object, reason: str, what: str, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StoreInputError(reason, f"{what} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise StoreInputError(reason, f"{what} must be >= {minimum}, got {value!r}")
    return float(value)


def require_channel(channel: object) -> str:
    if channel not in CHANNELS:
        raise StoreInputError("bad_channel", f"channel must be one of {CHANNELS}, got {channel!r}")
    return str(channel)


def dump_json(value: object, reason: str = "bad_payload") -> str:
    """Compact, key-sorted JSON (sorted so equal content gives equal bytes)."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreInputError(reason, f"not JSON-serialisable: {exc}") from exc


def check_profile(profile: Profile) -> None:
    require_text(profile.subject, "bad_profile", "subject")
    if not isinstance(profile.preferences, dict):
        raise StoreInputError("bad_profile", "preferences must be a dict")
    if not isinstance(profile.consent, dict):
        raise StoreInputError("bad_profile", "consent must be a dict")
    for purpose, granted in profile.consent.items():
        if purpose not in CONSENT_PURPOSES:
            raise StoreInputError("bad_consent", f"unknown consent purpose {purpose!r}")
        if not isinstance(granted, bool):
            raise StoreInputError("bad_consent", f"consent for {purpose} must be true/false")
    if profile.birthday is not None and (
        not isinstance(profile.birthday, str) or len(profile.birthday) != 10
    ):
        raise StoreInputError("bad_profile", "birthday must be YYYY-MM-DD")


def check_catalog_item(item: CatalogItem) -> None:
    require_text(item.product_id, "bad_catalog_item", "product_id")
    require_text(item.name, "bad_catalog_item", "name")
    require_number(item.price, "bad_catalog_item", "price", minimum=0)
    if isinstance(item.stock, bool) or not isinstance(item.stock, int) or item.stock < 0:
        raise StoreInputError("bad_catalog_item", f"stock must be an int >= 0, got {item.stock!r}")
    if item.style_id is not None:
        require_text(item.style_id, "bad_catalog_item", "style_id")


def stock_delta(quantity: float) -> int:
    """Units a POS line takes from stock: whole units, rounded away from zero (returns < 0)."""
    units = math.ceil(abs(quantity))
    return units if quantity >= 0 else -units
