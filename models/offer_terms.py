"""What an offer is, wherever it is held, and the rule every offer keeps (pure, no I/O).

An offer travels: the central team PUTs it to the hub (``hub.offers.OfferSpec``), the hub's
feed carries it to a store (``edge.sync_items.OfferUpsert``), the edge stores it
(``edge.store_rows.Offer``) and indexes it for ranking (``edge.offers.StoreOffer``). Each of
those adds its own fields (targeting, stores, title), but the terms underneath are one thing:
the same six fields, the same ``[valid_from, valid_to)`` window and the same "a product, a
category or both" rule. Declaring them once here (models/ is what both hub and edge import)
keeps the hub and its stores from drifting apart on when an offer applies.
"""

from __future__ import annotations

from dataclasses import dataclass

NO_TARGET = "an offer needs a product_id or a category (or both)"


def lacks_target(product_id: str | None, category: str | None) -> bool:
    """An offer discounts a product, a whole category, or a product within a category;
    one naming neither would discount everything, which no one ever means."""
    return product_id is None and category is None


@dataclass(frozen=True, slots=True)
class OfferTerms:
    """The terms of one offer; ``valid_from`` / ``valid_to`` are UNIX seconds."""

    offer_id: str
    product_id: str | None
    category: str | None
    discount_pct: float
    valid_from: float
    valid_to: float

    def valid_at(self, now: float) -> bool:
        """Redeemable at ``now``: inside ``[valid_from, valid_to)``, so an offer ending at
        midnight is over at midnight and the next one can start there without overlap."""
        return self.valid_from <= now < self.valid_to

    def row(self) -> tuple[str, str | None, str | None, float, float, float]:
        """The terms in the column order of the edge's ``offers`` table (OFFER_UPSERT)."""
        return (self.offer_id, self.product_id, self.category, self.discount_pct,
                self.valid_from, self.valid_to)
