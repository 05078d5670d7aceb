"""What every ranking reads and what rarely changes: in-stock items (per zone and per
style), product names, the store's offers. Cached on the worker thread, reloaded only when
it changed.

Why version counters instead of re-reading: a check-in must not pay for a catalog scan.
SQLite triggers bump ``catalog_version`` and ``offers_version`` on any write (POS stock
decrements, hub feed pages, seeding), so nothing can change either without the cache
noticing. The catalog is checked by the service's tick (and marked stale at once by a POS
basket on the same thread); offers are checked at each ranking (one indexed read, not one
per suggestion), so the ranking right after an offers page already sees it.
"""

from __future__ import annotations

from edge.offers import EMPTY_BOOK, OfferBook
from edge.store import CatalogItem, EdgeStore


class RankingInputs:
    """Cached catalog and offers of one service (used by its worker thread only)."""

    def __init__(self, store: EdgeStore) -> None:
        self._store = store
        self._by_zone: dict[str | None, list[CatalogItem]] = {}
        self._names: dict[str, str] = {}  # product id -> catalog name, for reasons
        self._styles: dict[str, list[CatalogItem]] = {}  # style id -> in-stock variants
        self._catalog_version: int | None = None
        self._catalog_stale = True
        self._offers_version: int | None = None
        self._offer_book = EMPTY_BOOK

    def mark_stale(self) -> None:
        """Stock changed on this thread (a POS basket)."""
        self._catalog_stale = True

    def notice_changes(self) -> None:
        """Changed by someone else (catalog sync)? Then reload at the next ranking."""
        if self._store.catalog_version() != self._catalog_version:
            self._catalog_stale = True

    def _load(self) -> None:
        if not self._catalog_stale:
            return
        self._catalog_stale = False
        self._catalog_version = self._store.catalog_version()
        catalog = self._store.catalog()
        self._names = {item.product_id: item.name for item in catalog}
        in_stock = [item for item in catalog if item.stock > 0]
        by_zone: dict[str | None, list[CatalogItem]] = {None: in_stock}
        styles: dict[str, list[CatalogItem]] = {}
        for item in in_stock:
            if item.zone is not None:  # None is the whole list itself: no self-append
                by_zone.setdefault(item.zone, []).append(item)
            if item.style_id is not None:
                styles.setdefault(item.style_id, []).append(item)
        self._by_zone, self._styles = by_zone, styles

    def in_stock(self, zone: str | None) -> list[CatalogItem]:
        """In-stock items of the zone when given (else all); the same list object until the
        catalog changes (the ranker caches its ids by identity)."""
        self._load()
        return self._by_zone.get(zone) or self._by_zone[None]

    def style_items(self, style_id: str | None) -> list[CatalogItem]:
        """Every in-stock variant of a style in the whole store (product id order), for the
        card's "also in ..."; none for a product that is a style of its own."""
        self._load()
        return self._styles.get(style_id, []) if style_id is not None else []

    def name_of(self, product_id: str) -> str:
        """What staff call a product (its id when the catalog does not know it)."""
        return self._names.get(product_id, product_id)

    def forget_offers(self) -> None:
        """Drop the cached book (an erasure: no subject lingers in memory until the next
        ranking reloads it)."""
        self._offers_version, self._offer_book = None, EMPTY_BOOK

    def offers(self, now: float) -> OfferBook:
        """The store's offers; validity is checked on every use of the book, so an offer
        ends on time without a reload."""
        reader = self._store.reader()
        if reader.offers_version() != self._offers_version:
            self._offers_version, self._offer_book = reader.offer_book(now)
        return self._offer_book
