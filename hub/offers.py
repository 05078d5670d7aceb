"""Offers / campaigns: validation and targeting (which store, which member, when). Pure.

An offer discounts one product or a whole category by ``discount_pct`` between
``valid_from`` and ``valid_to`` (UNIX seconds, ``[from, to)``), in a list of stores or in
every store (``stores`` = None), optionally only for the members of one segment.

Why targeting is decided at the hub: the edge has no segments (it only caches the profiles of
members relevant to it), so a segment-targeted offer travels to a store *with the list of that
store's eligible subjects* and only to stores where that list is non-empty. The feed code
(``hub.catalog_store``) calls ``store_targets`` for every change; this module only decides.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hub.catalog_rows import InputError, finite_number, optional_text
from hub.stores import STORE_ID
from models.offer_terms import NO_TARGET, OfferTerms, lacks_target

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
BAD = "bad_offer"
MAX_STORES = 10_000
_FIELDS = ("offer_id", "product_id", "category", "discount_pct", "valid_from", "valid_to",
           "segment", "stores", "title")


@dataclass(frozen=True)
class OfferSpec(OfferTerms):
    segment: str | None = None
    stores: tuple[str, ...] | None = None  # None: every registered store
    title: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "offer_id": self.offer_id, "product_id": self.product_id,
            "category": self.category, "discount_pct": self.discount_pct,
            "valid_from": self.valid_from, "valid_to": self.valid_to,
            "segment": self.segment,
            "stores": list(self.stores) if self.stores is not None else None,
            "title": self.title,
        }


def _time(doc: Mapping[str, Any], key: str) -> float:
    return finite_number(doc.get(key), key, BAD)


def check_id(value: object, field: str, reason: str = BAD) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise InputError(reason, field, "must match " + ID_PATTERN.pattern)
    return value


def parse_offer(doc: object, offer_id: str | None = None) -> OfferSpec:
    """Validate an offer document (``offer_id`` from the URL wins over the body's)."""
    if not isinstance(doc, Mapping):
        raise InputError(BAD, "body", "expected a JSON object")
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise InputError(BAD, unknown[0], "unknown field")
    oid = check_id(offer_id if offer_id is not None else doc.get("offer_id"), "offer_id")
    if offer_id is not None and doc.get("offer_id") not in (None, offer_id):
        raise InputError(BAD, "offer_id", "differs from the offer id in the path")
    product = optional_text(doc, "product_id", BAD, 64)
    category = optional_text(doc, "category", BAD, 120)
    if lacks_target(product, category):
        raise InputError(BAD, "product_id", NO_TARGET)
    pct = finite_number(doc.get("discount_pct"), "discount_pct", BAD)
    if not 0 < pct <= 100:
        raise InputError(BAD, "discount_pct", f"must be in (0, 100], got {pct!r}")
    start, end = _time(doc, "valid_from"), _time(doc, "valid_to")
    if not start < end:
        raise InputError(BAD, "valid_to", "must be after valid_from")
    segment = doc.get("segment")
    if segment is not None:
        check_id(segment, "segment")
    stores = doc.get("stores")
    if stores is not None:
        if not isinstance(stores, list) or len(stores) > MAX_STORES:
            raise InputError(BAD, "stores", "must be a list of store ids, or null for every store")
        for store in stores:
            if not isinstance(store, str) or not STORE_ID.match(store):
                raise InputError(BAD, "stores", f"invalid store id {store!r}")
        stores = tuple(sorted(set(stores)))
    return OfferSpec(oid, product, category, pct, start, end, segment, stores,
                     optional_text(doc, "title", BAD))


def is_active(offer: OfferSpec, now: float) -> bool:
    """Redeemable at ``now``: inside ``[valid_from, valid_to)``."""
    return offer.valid_at(now)


def is_expired(offer: OfferSpec, now: float) -> bool:
    """Nothing left to send: an expired offer drops out of feeds (the edge checks the window
    itself, so one it already holds stops applying at ``valid_to`` without a delete)."""
    return now >= offer.valid_to


def targeted_stores(offer: OfferSpec, registered: Iterable[str]) -> set[str]:
    """Registered stores the offer is meant for (unknown ids in ``stores`` are ignored)."""
    known = set(registered)
    return known if offer.stores is None else known & set(offer.stores)


def store_targets(
    offer: OfferSpec,
    registered: Iterable[str],
    eligible_by_store: Mapping[str, Collection[str]] | None,
) -> dict[str, tuple[str, ...] | None]:
    """Store -> subjects the offer applies to there (None: every customer).

    For a segment-targeted offer ``eligible_by_store`` holds, per store, the segment's members
    relevant to that store; a store without any gets no offer at all (a delete if it had one).
    """
    stores = targeted_stores(offer, registered)
    if offer.segment is None:
        return {store: None for store in sorted(stores)}
    eligible = eligible_by_store or {}
    return {
        store: tuple(sorted(eligible[store]))
        for store in sorted(stores)
        if eligible.get(store)
    }


def applies(
    offer: OfferSpec,
    *,
    store: str,
    now: float,
    product_id: str | None = None,
    category: str | None = None,
    member_segments: Collection[str] = (),
) -> bool:
    """Does the offer discount this product for this member in this store right now?

    ``member_segments`` are the ids of the segments the member belongs to (anonymous: none).
    """
    if not is_active(offer, now):
        return False
    if offer.stores is not None and store not in offer.stores:
        return False
    if offer.segment is not None and offer.segment not in member_segments:
        return False
    if offer.product_id is not None and offer.product_id != product_id:
        return False
    return offer.category is None or offer.category == category
