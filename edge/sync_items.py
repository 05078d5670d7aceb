"""Feed items of the hub ⇄ edge sync contract, checked and turned into typed changes.

Pure (no I/O). A malformed item raises ``BadItem``: the sync client skips and counts it, so
one bad record at the hub can never stop a store's feed, and nothing half-checked reaches
SQLite. Times may come as epoch seconds or ISO 8601 with an offset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from edge.store_rows import CatalogItem, StoreInputError, require_number, require_text
from models.offer_terms import NO_TARGET, OfferTerms, lacks_target

_T = TypeVar("_T")


class BadItem(ValueError):
    """One feed item that cannot be applied; skipped (and counted) so the feed moves on."""


class HistoryLine(NamedTuple):
    """One purchase line, in the column order of the edge's ``purchases`` (after subject).

    A tuple, not a dataclass: 10,000 profiles carry ~100,000 lines, and a tuple is both the
    cheapest thing to build and what the store compares and inserts as is."""

    basket_id: str
    ts: float
    product_id: str
    quantity: float
    price: float | None
    category: str | None


@dataclass(frozen=True, slots=True)
class ProfileUpsert:
    subject: str
    first_name: str | None
    tier: str | None
    birthday: str | None
    preferences: dict[str, Any]
    consent: dict[str, bool]
    home_store: str | None
    baskets: int
    total_spend: float
    last_purchase_ts: float | None
    history: tuple[HistoryLine, ...]


@dataclass(frozen=True, slots=True)
class Removal:
    """A delete from a feed: ``key`` is the subject / product / offer id."""

    key: str
    reason: str


def _upsert_key(item: Mapping[str, Any], key: str, reason: str | None) -> str | Removal:
    """The key (``item[key]``) of an upsert, or the Removal a delete asks for; any other op
    is a BadItem. ``reason``: why every delete of this feed happens; None: the item says why
    (a profile leaves a store for different reasons, and the store logs which)."""
    value = _text(item.get(key), key)
    op = item.get("op")
    if op == "delete":
        return Removal(value, reason or str(item.get("reason") or "not_relevant"))
    if op != "upsert":
        raise BadItem(f"unknown op {op!r}")
    return value


def profile_change(item: Mapping[str, Any]) -> ProfileUpsert | Removal:
    subject = _upsert_key(item, "subject", None)
    if isinstance(subject, Removal):
        return subject
    profile = _mapping(item.get("profile"), "profile")
    aggregates = _mapping(item.get("aggregates") or {}, "aggregates")
    history = item.get("history") or []
    if not isinstance(history, list):
        raise BadItem("history is not a list")
    consent = _mapping(profile.get("consent") or {}, "consent")
    return ProfileUpsert(
        subject=subject,
        first_name=_optional_text(profile.get("first_name"), "first_name"),
        tier=_optional_text(profile.get("tier"), "tier"),
        birthday=_optional_text(profile.get("birthday"), "birthday"),
        preferences=dict(_mapping(profile.get("preferences") or {}, "preferences")),
        consent={str(k): v is True for k, v in consent.items()},
        home_store=_optional_text(profile.get("home_store"), "home_store"),
        baskets=int(_number(aggregates.get("baskets", 0), "baskets")),
        total_spend=_number(aggregates.get("total_spend", 0.0), "total_spend"),
        last_purchase_ts=_optional_number(aggregates.get("last_purchase_ts"), "last_purchase_ts"),
        history=tuple(_history_line(_mapping(line, "history line")) for line in history),
    )


_NUMBER = (int, float)


def _history_line(line: Mapping[str, Any]) -> HistoryLine:
    values: list[Any] = [line.get(k) for k in ("basket_id", "ts", "product_id", "price",
                                                "category")]
    basket_id, ts, product_id, price, category = values
    quantity: Any = line.get("quantity", 1)
    if (  # the common, well-formed line: plain type checks, no call per field
        type(basket_id) is str and basket_id and type(product_id) is str and product_id
        and type(ts) in _NUMBER and type(quantity) in _NUMBER
        and (price is None or type(price) in _NUMBER)
        and (category is None or (type(category) is str and category))
        and math.isfinite(ts + quantity + (price or 0.0))
    ):
        return HistoryLine(basket_id, float(ts), product_id, float(quantity),
                           None if price is None else float(price), category)
    return HistoryLine(  # anything else: field by field, to say which one is wrong
        basket_id=_text(line.get("basket_id"), "basket_id"),
        ts=_number(line.get("ts"), "ts"),
        product_id=_text(line.get("product_id"), "product_id"),
        quantity=_number(line.get("quantity", 1), "quantity"),
        price=_optional_number(line.get("price"), "price"),
        category=_optional_text(line.get("category"), "category"),
    )


@dataclass(frozen=True, slots=True)
class CatalogUpsert(CatalogItem):
    """A catalog feed upsert is the store's catalog row as is (``style_id`` absent in a hub
    older than styles: a style of its own); its own class so a page's changes sort by type."""


def catalog_change(item: Mapping[str, Any]) -> CatalogUpsert | Removal:
    product_id = _upsert_key(item, "product_id", "deleted")
    if isinstance(product_id, Removal):
        return product_id
    stock = _number(item.get("stock", 0), "stock")
    if stock < 0 or stock != int(stock):
        raise BadItem("stock must be a whole number >= 0")
    price = _number(item.get("price"), "price")
    if price < 0:
        raise BadItem("price must be >= 0")
    return CatalogUpsert(
        product_id=product_id,
        name=_text(item.get("name"), "name"),
        category=_optional_text(item.get("category"), "category"),
        price=price,
        stock=int(stock),
        zone=_optional_text(item.get("zone"), "zone"),
        style_id=_optional_text(item.get("style_id"), "style_id"),
    )


@dataclass(frozen=True, slots=True)
class OfferUpsert(OfferTerms):
    segment: str | None = None
    # None: for every customer; a tuple (maybe empty): only these subjects (segment offer)
    subjects: tuple[str, ...] | None = None


def offer_change(item: Mapping[str, Any]) -> OfferUpsert | Removal:
    offer_id = _upsert_key(item, "offer_id", "deleted")
    if isinstance(offer_id, Removal):
        return offer_id
    offer = OfferUpsert(
        offer_id=offer_id,
        product_id=_optional_text(item.get("product_id"), "product_id"),
        category=_optional_text(item.get("category"), "category"),
        discount_pct=_number(item.get("discount_pct"), "discount_pct"),
        valid_from=_instant(item.get("valid_from"), "valid_from"),
        valid_to=_instant(item.get("valid_to"), "valid_to"),
        segment=_optional_text(item.get("segment"), "segment"),
        subjects=_subjects(item),
    )
    if lacks_target(offer.product_id, offer.category):
        raise BadItem(NO_TARGET)
    if not 0 <= offer.discount_pct <= 100 or not offer.valid_from < offer.valid_to:
        raise BadItem("discount_pct must be 0..100 and valid_from before valid_to")
    return offer


def _subjects(item: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The hub's eligible subjects of a segment offer. The key decides: absent = everyone,
    present = only those listed; a segment offer without the list is refused rather than
    offered to everyone."""
    if "subjects" not in item:
        if item.get("segment") is not None:
            raise BadItem("a segment offer needs its subjects")
        return None
    subjects = item["subjects"]
    if not isinstance(subjects, list):
        raise BadItem("subjects must be a list")
    return tuple(sorted({_text(s, "subject") for s in subjects}))


@dataclass(frozen=True, slots=True)
class Erasure:
    erasure_id: str
    subject: str


def erasure_item(item: Mapping[str, Any]) -> Erasure:
    return Erasure(_text(item.get("erasure_id"), "erasure_id"), _text(item.get("subject"),
                                                                      "subject"))


# --------------------------------------------------------------------------- field checks


def _checked(check: Callable[[object, str, str], _T], value: Any, what: str) -> _T:
    """The store's own field check (edge.store_rows), so a feed item and a local write obey
    the same rule; its refusal becomes a BadItem (skip and count) instead of a dead letter."""
    try:
        return check(value, "bad_item", what)
    except StoreInputError as exc:
        raise BadItem(str(exc)) from None


def _text(value: Any, what: str) -> str:
    return _checked(require_text, value, what)


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else _checked(require_text, value, what)


def _number(value: Any, what: str) -> float:
    return _checked(require_number, value, what)


def _optional_number(value: Any, what: str) -> float | None:
    return None if value is None else _checked(require_number, value, what)


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadItem(f"{what} must be an object")
    return value


def _instant(value: Any, what: str) -> float:
    """Epoch seconds, or an ISO 8601 timestamp with an offset (both occur on the wire)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadItem(f"{what} is not an ISO 8601 timestamp") from exc
        if parsed.tzinfo is None:
            raise BadItem(f"{what} needs a UTC offset")
        return parsed.timestamp()
    return _number(value, what)
