"""What staff and the app are shown: payloads built from a rules decision (pure).

Consent decides what leaves the edge: without ``staff_display`` a card carries no name,
tier, preferences or birthday, only a short stable tag ("Customer 4F2") so staff can
still tell two customers apart. Without ``personalize`` no profile is read at all.

A suggestion stands for its style (edge.rules): its ``variants`` are the style's other
in-stock SKUs, each named by what tells it apart ("navy"), so staff can say "also in navy"
instead of the list spending a second slot on a second colour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any

from edge.messages import build_app_offer, build_staff_recommendation
from edge.offers import AppliedOffer
from edge.rules import Decision, Suggestion
from edge.store_rows import CatalogItem

BIRTHDAY_WINDOW_DAYS = 3
NO_OFFERS: Mapping[str, AppliedOffer] = MappingProxyType({})
MAX_VARIANTS = 6  # a card line, not a catalog page
_WORD_EDGES = " ,;:/-–()"


def no_styles(style_id: str | None) -> Sequence[CatalogItem]:
    """The style lookup of a store without styles: every product is a style of its own."""
    return ()


@dataclass(frozen=True)
class ProfileView:
    """The part of a loyalty profile staff may see (only with ``staff_display``)."""

    first_name: str | None
    tier: str | None
    birthday: str | None  # YYYY-MM-DD
    preferences: dict[str, Any]


def subject_tag(subject: str) -> str:
    """Three hex characters, stable per subject, not reversible to anything useful."""
    return hashlib.sha256(subject.encode()).hexdigest()[:3].upper()


def birthday_this_week(birthday: str | None, today: date) -> bool:
    """True when the birthday (any year) falls within ±3 days of ``today``."""
    if not birthday:
        return False
    try:
        born = date.fromisoformat(birthday)
    except ValueError:
        return False
    for year in (today.year - 1, today.year, today.year + 1):
        try:
            anniversary = born.replace(year=year)
        except ValueError:  # 29 February in a common year
            anniversary = date(year, 3, 1)
        if abs((anniversary - today).days) <= BIRTHDAY_WINDOW_DAYS:
            return True
    return False


def variant_labels(name: str, others: Sequence[str]) -> list[str]:
    """What tells each of ``others`` apart: its words after the leading words every name
    (``name`` included) shares, e.g. "Wool beanie, navy" beside "Wool beanie, grey" →
    "navy"; its whole name when nothing is left (or nothing is shared)."""
    split = [n.split() for n in (name, *others)]
    keys = [[w.strip(_WORD_EDGES).casefold() for w in words] for words in split]
    shared = 0
    while all(len(k) > shared for k in keys) and len({k[shared] for k in keys}) == 1:
        shared += 1
    return [" ".join(words[shared:]).strip(_WORD_EDGES) or full
            for words, full in zip(split[1:], others, strict=True)]


def variants_of(s: Suggestion, style_items: Sequence[CatalogItem]) -> list[dict[str, Any]]:
    """The style's other in-stock variants (at most ``MAX_VARIANTS``), labelled."""
    others = [i for i in style_items if i.product_id != s.product_id and i.stock > 0]
    others = others[:MAX_VARIANTS]
    labels = variant_labels(s.name, [i.name for i in others])
    return [{"product_id": i.product_id, "name": label, "stock": i.stock}
            for i, label in zip(others, labels, strict=True)]


def suggestion_dict(s: Suggestion, offer: AppliedOffer | None = None,
                    variants: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """``price`` is the list price; with an offer, ``offer.price_after`` is what the customer
    pays (the suggestion itself carries that price: the rules judged it). ``variants``: the
    other variants of its style (``variants_of``), empty for a style of one."""
    return {
        "product_id": s.product_id,
        "name": s.name,
        "category": s.category,
        "price": round(offer.list_price if offer is not None else s.price, 2),
        "offer": offer.as_dict() if offer is not None else None,
        "stock": s.stock,
        "zone": s.zone,
        "rank": s.rank,
        "score": round(s.score, 5),
        "relevance": round(s.relevance, 4),
        "reasons": [r.as_dict() for r in s.reasons],
        "allowed_by": list(s.allowed_by),
        "variants": [dict(v) for v in variants],
    }


def staff_card(
    *,
    event_id: str,
    ts: float,
    visit_id: str,
    subject: str,
    scopes: frozenset[str],
    zone: str | None,
    dwell_since: float | None,
    trigger: str,
    trigger_event_id: str | None,
    source: str,
    model_version: str | None,
    decision: Decision,
    profile: ProfileView | None,
    today: date,
    offers: Mapping[str, AppliedOffer] = NO_OFFERS,
    styles: Callable[[str | None], Sequence[CatalogItem]] = no_styles,
) -> dict[str, Any]:
    """The staff recommendation message (MQTT) and tablet card (SSE): one payload.
    ``offers``: the store offer applied to each suggestion (by product id), if any;
    ``styles``: the in-stock variants of a style (edge.ranking_inputs.style_items)."""
    shown = profile if "staff_display" in scopes else None
    return build_staff_recommendation(
        event_id=event_id,
        ts=ts,
        visit_id=visit_id,
        subject=subject,
        display_name=(shown.first_name if shown and shown.first_name else None)
        or f"Customer {subject_tag(subject)}",
        tier=shown.tier if shown else None,
        zone=zone,
        dwell_since=dwell_since,
        trigger=trigger,
        trigger_event_id=trigger_event_id,
        source=source,
        model_version=model_version,
        consent=sorted(scopes),
        suggestions=[
            suggestion_dict(s, offers.get(s.product_id), variants_of(s, styles(s.style_id)))
            for s in decision.staff
        ],
        profile=(
            {
                "preferences": shown.preferences,
                "birthday_this_week": birthday_this_week(shown.birthday, today),
            }
            if shown
            else None
        ),
    )


def app_offer(
    *, event_id: str, ts: float, visit_id: str, suggestion: Suggestion,
    offer: AppliedOffer | None = None,
) -> dict[str, Any]:
    """The message on the customer's own offers topic. ``price`` is what the customer pays
    (after the store offer, when one applies: the app shows the customer's price)."""
    return build_app_offer(
        event_id=event_id,
        ts=ts,
        visit_id=visit_id,
        product_id=suggestion.product_id,
        name=suggestion.name,
        price=offer.price_after if offer is not None else round(suggestion.price, 2),
        offer_id=offer.offer_id if offer is not None else None,
        offer=offer.as_dict() if offer is not None else None,
        reasons=[r.as_dict() for r in suggestion.reasons],
    )
