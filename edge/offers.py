"""Which store offer applies to a suggestion, for whom, at what price (pure, no I/O).

The hub decides who may get a segment offer (the edge has no segments): such an offer comes
with the pseudonymous subjects eligible in this store, and applies to them only. Everything
else is decided here, per ranking, on the edge's clock, so an offer starts and stops at its
``[valid_from, valid_to)`` boundaries without waiting for a feed delete.

Why an index instead of a scan: a ranking asks for dozens of candidates; a dict lookup per
candidate (product, then category) keeps that at microseconds even with thousands of offers.

Choice when several apply, and why: a product offer beats a category offer (it was meant for
this item), then the highest discount (best for the customer), then the earliest end (use it
before it goes), then the offer id (deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge.rules import Candidate
from models.offer_terms import OfferTerms, lacks_target
from models.reasons import Reason

# A segment offer reveals that the customer is in a segment, i.e. personal data: its reason
# is personal (models.reasons), so it is shown only under the ``personalize`` consent.
OFFER_REASON, MEMBER_OFFER_REASON = "offer", "member_offer"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True)
class StoreOffer(OfferTerms):
    """An offer as the edge holds it. ``subjects`` None: every customer; a set: only those
    (a segment offer; an empty set applies to nobody)."""

    subjects: frozenset[str] | None = None

    @property
    def targeted(self) -> bool:
        return self.subjects is not None

    def open_to(self, subject: str | None) -> bool:
        """Anonymous customers (``None``) only get offers meant for everyone."""
        return self.subjects is None or (subject is not None and subject in self.subjects)


@dataclass(frozen=True, slots=True)
class AppliedOffer:
    """The offer chosen for one suggestion and the prices it gives."""

    offer_id: str
    discount_pct: float
    list_price: float
    price_after: float
    valid_to: float
    targeted: bool

    def as_dict(self) -> dict[str, Any]:
        """The ``offer`` object of staff cards and app offers (docs/mqtt.md)."""
        return {
            "offer_id": self.offer_id,
            "discount_pct": self.discount_pct,
            "list_price": round(self.list_price, 2),
            "price_after": self.price_after,
            "valid_to": self.valid_to,
        }


def discounted(price: float, discount_pct: float) -> float:
    """Price after the discount, in cents (never below 0, never above the list price)."""
    pct = min(max(discount_pct, 0.0), 100.0)
    return max(0.0, min(price, round(price * (100.0 - pct) / 100.0, 2)))


def _rank_key(offer: StoreOffer) -> tuple[float, float, str]:
    return (-offer.discount_pct, offer.valid_to, offer.offer_id)


class OfferBook:
    """The store's offers indexed by product and by category; built once per offers change."""

    def __init__(self, offers: Iterable[StoreOffer]) -> None:
        self.by_product: dict[str, list[StoreOffer]] = {}
        self.by_category: dict[str, list[StoreOffer]] = {}
        count = 0
        for offer in offers:
            if not (math.isfinite(offer.discount_pct) and offer.discount_pct > 0) or \
                    lacks_target(offer.product_id, offer.category):
                continue  # a 0% offer is no offer: nothing to show or redeem
            count += 1
            if offer.product_id is not None:
                self.by_product.setdefault(offer.product_id, []).append(offer)
            elif offer.category is not None:
                self.by_category.setdefault(offer.category, []).append(offer)
        for group in (*self.by_product.values(), *self.by_category.values()):
            group.sort(key=_rank_key)  # best first: the first one that applies wins
        self.size = count

    def __len__(self) -> int:
        return self.size

    def best(
        self,
        product_id: str,
        category: str | None,
        price: float,
        subject: str | None,
        now: float,
    ) -> AppliedOffer | None:
        """The offer this customer gets on this item now, or None.

        A product offer that also names a category applies only when both match (the hub's
        rule, ``hub.offers.applies``).
        """
        chosen: StoreOffer | None = None
        for offer in self.by_product.get(product_id, ()):
            if (offer.category is None or offer.category == category) and \
                    offer.valid_at(now) and offer.open_to(subject):
                chosen = offer
                break
        if chosen is None and category is not None:
            for offer in self.by_category.get(category, ()):
                if offer.valid_at(now) and offer.open_to(subject):
                    chosen = offer
                    break
        if chosen is None or not (math.isfinite(price) and price >= 0):
            return None
        return AppliedOffer(
            offer_id=chosen.offer_id,
            discount_pct=chosen.discount_pct,
            list_price=price,
            price_after=discounted(price, chosen.discount_pct),
            valid_to=chosen.valid_to,
            targeted=chosen.targeted,
        )

    def for_items(
        self,
        items: Iterable[tuple[str, str | None, float]],
        subject: str | None,
        now: float,
    ) -> dict[str, AppliedOffer]:
        """``{product_id: offer}`` for the (product_id, category, price) that have one."""
        if not self.size:
            return {}
        out: dict[str, AppliedOffer] = {}
        for product_id, category, price in items:
            applied = self.best(product_id, category, price, subject, now)
            if applied is not None:
                out[product_id] = applied
        return out


EMPTY_BOOK = OfferBook(())


def until_text(valid_to: float, now: float, tz: ZoneInfo) -> str:
    """When an offer ends, as staff would say it: "until 18:00", "until Sun", "until 3 Dec".

    ``valid_to`` is exclusive, so an offer ending at midnight runs "until" the day before.
    """
    end = datetime.fromtimestamp(valid_to, tz)
    last = datetime.fromtimestamp(max(valid_to - 1.0, now), tz)
    today = datetime.fromtimestamp(now, tz).date()
    days = last.date() - today
    if not days:
        return "until midnight" if end.date() != today else f"until {end:%H:%M}"
    if days == timedelta(days=1):
        return "until tomorrow"
    if days < timedelta(days=7):
        return f"until {_WEEKDAYS[last.weekday()]}"
    return f"until {last.day} {_MONTHS[last.month - 1]}"


def percent_text(discount_pct: float) -> str:
    """15 -> "15%", 12.5 -> "12.5%"."""
    return f"{round(discount_pct, 1):g}%"


def offer_reason(offer: AppliedOffer, now: float, tz: ZoneInfo) -> Reason:
    """ "15% off until Sun"; a segment offer's reason is personal (see MEMBER_OFFER_REASON)."""
    kind = MEMBER_OFFER_REASON if offer.targeted else OFFER_REASON
    return Reason(kind, f"{percent_text(offer.discount_pct)} off "
                        f"{until_text(offer.valid_to, now, tz)}")


def book_from_rows(
    rows: Iterable[tuple[str, str | None, str | None, float, float, float]],
    subjects: Mapping[str, Iterable[str]],
    targeted: Iterable[str],
) -> OfferBook:
    """An OfferBook from the store's rows: offers, subjects per offer, ids of segment offers."""
    segment_offers = set(targeted)
    return OfferBook(
        StoreOffer(oid, pid, cat, pct, start, end,
                   frozenset(subjects.get(oid, ())) if oid in segment_offers else None)
        for oid, pid, cat, pct, start, end in rows
    )


def priced(candidates: Sequence[Candidate], applied: Mapping[str, AppliedOffer]) -> list[Candidate]:
    """Candidates at the price the customer would pay: the rules' affordability check is
    about what leaves the customer's pocket, so an offer can make an item affordable."""
    if not applied:
        return list(candidates)
    return [
        replace(c, price=a.price_after) if (a := applied.get(c.product_id)) is not None else c
        for c in candidates
    ]


def with_offer_reasons(
    candidates: Sequence[Candidate], applied: Mapping[str, AppliedOffer], now: float,
    tz: ZoneInfo,
) -> list[Candidate]:
    """The offer goes first among the reasons: it is what a shop assistant would lead with."""
    if not applied:
        return list(candidates)
    return [
        replace(c, reasons=(offer_reason(a, now, tz), *c.reasons))
        if (a := applied.get(c.product_id)) is not None else c
        for c in candidates
    ]
