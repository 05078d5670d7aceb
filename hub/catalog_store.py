"""Catalog, store metadata, assortment and stock at the hub, and each store's catalog feed.

Built on ``HubDB`` (one writer, ``BEGIN IMMEDIATE``, global change sequence). A store's feed
row is ``assortment(store, product_id)``; it gets a new sequence number exactly when
something the store sees changes — the product's name / category / price / style (every
store that lists it), its zone or stock in that store, or its removal (``listed = 0``). A write that
changes nothing (an ERP resending the same stock) allocates nothing, so the feeds stay quiet.

Sequence numbers are unique within one store's feed (one per product per change), which is
what makes paging by ``seq > cursor`` exact.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hub.catalog_rows import InputError, Listing, Product
from hub.feeds import FeedPage, feed_page
from hub.storage import HubDB

logger = logging.getLogger(__name__)

_PRODUCT_KEYS = ("product_id", "name", "category", "price", "brand", "style_id", "updated_at")
_FEED_SQL = (
    "SELECT a.seq, a.product_id, a.listed, p.name, p.category, p.price, a.stock, a.zone, "
    "p.style_id "
    "FROM assortment a LEFT JOIN products p USING (product_id) "
    "WHERE a.store = ? AND a.seq > ? ORDER BY a.seq LIMIT ?"
)


def check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError("bad_store", "timezone", f"unknown time zone {name!r}") from exc
    return name


def _require_store(conn: sqlite3.Connection, store: str) -> None:
    if conn.execute("SELECT 1 FROM stores WHERE store_id = ?", (store,)).fetchone() is None:
        raise LookupError(store)


class CatalogStore:
    """Products, store metadata, assortment and stock (writes) and the catalog feed (reads)."""

    def __init__(self, db: HubDB) -> None:
        self.db = db

    # ------------------------------------------------------------------ products

    def upsert_products(self, products: Iterable[Product]) -> dict[str, int]:
        """Insert or update; returns counts. Stores listing a product whose name, category,
        price or style changed get a feed item (brand is not in the feed)."""
        rows = list(products)
        now = self.db.clock()
        created = changed = 0
        with self.db.write() as conn:
            current = {r[0]: tuple(r[1:]) for r in conn.execute(
                "SELECT product_id, name, category, price, style_id, brand FROM products "
                "WHERE product_id IN (SELECT value FROM json_each(?))",
                (json.dumps([p.product_id for p in rows]),))}
            upserts, bumped = [], []
            for p in rows:
                before = current.get(p.product_id)
                fed = (p.name, p.category, p.price, p.style_id)  # what the stores see
                if before == (*fed, p.brand):
                    continue
                upserts.append((p.product_id, *fed, p.brand, now))
                if before is None:
                    created += 1
                else:
                    changed += 1
                    if before[:4] != fed:
                        bumped.append(p.product_id)
            conn.executemany(
                "INSERT INTO products(product_id, name, category, price, style_id, brand, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(product_id) DO UPDATE SET "
                "name = excluded.name, category = excluded.category, price = excluded.price, "
                "style_id = excluded.style_id, brand = excluded.brand, "
                "updated_at = excluded.updated_at",
                upserts,
            )
            self._bump_listings(conn, bumped, now)
        return {"received": len(rows), "created": created, "updated": changed,
                "unchanged": len(rows) - created - changed}

    @staticmethod
    def _bump_listings(conn: sqlite3.Connection, product_ids: Sequence[str], now: float) -> None:
        """One new seq per product: unique within each store (one row per product)."""
        if not product_ids:
            return
        first = HubDB.next_seq(conn, len(product_ids))
        conn.executemany(
            "UPDATE assortment SET seq = ?, updated_at = ? WHERE product_id = ? AND listed = 1",
            [(first + i, now, pid) for i, pid in enumerate(product_ids)],
        )

    def delete_product(self, product_id: str) -> bool:
        """Remove a product from the catalog and from every store (deletes in their feeds)."""
        with self.db.write() as conn:
            if not conn.execute("DELETE FROM products WHERE product_id = ?",
                                (product_id,)).rowcount:
                return False
            stores = [r[0] for r in conn.execute(
                "SELECT store FROM assortment WHERE product_id = ? AND listed = 1",
                (product_id,))]
            if stores:
                seq = HubDB.next_seq(conn)
                conn.execute(
                    "UPDATE assortment SET listed = 0, seq = ?, updated_at = ? "
                    "WHERE product_id = ? AND listed = 1", (seq, self.db.clock(), product_id))
        return True

    def products(self, after: str = "", limit: int = 500,
                 product_id: str | None = None) -> list[dict[str, Any]]:
        """A page of the catalog by product id (or the one product ``product_id``)."""
        where, args = ("product_id = ?", (product_id,)) if product_id is not None else \
            ("product_id > ?", (after,))
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT product_id, name, category, price, brand, style_id, updated_at "
                "FROM products "
                f"WHERE {where} ORDER BY product_id LIMIT ?", (*args, limit)).fetchall()
        return [dict(zip(_PRODUCT_KEYS, r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ stores

    def set_store_meta(self, store: str, name: str | None, timezone: str,
                       zones: list[str]) -> None:
        """Raises LookupError for an unregistered store (``add-store`` creates its key)."""
        check_timezone(timezone)
        now = self.db.clock()
        with self.db.write() as conn:
            _require_store(conn, store)
            if name is not None:
                conn.execute("UPDATE stores SET name = ? WHERE store_id = ?", (name, store))
            conn.execute(
                "INSERT OR REPLACE INTO store_meta(store_id, timezone, zones, updated_at) "
                "VALUES (?, ?, ?, ?)", (store, timezone, json.dumps(zones), now))

    def store_meta(self, store: str) -> dict[str, Any] | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT s.store_id, s.name, m.timezone, m.zones, "
                "(SELECT COUNT(*) FROM assortment a WHERE a.store = s.store_id AND listed = 1) "
                "FROM stores s LEFT JOIN store_meta m USING (store_id) WHERE s.store_id = ?",
                (store,)).fetchone()
        if row is None:
            return None
        return {"store": row[0], "name": row[1], "timezone": row[2],
                "zones": json.loads(row[3]) if row[3] else [], "products": row[4]}

    # ------------------------------------------------------------------ assortment, stock

    def set_assortment(self, store: str, listings: Sequence[Listing], *,
                       replace: bool = False) -> dict[str, int]:
        """List products in ``store`` (zone, optional stock). ``replace``: the given list is
        the whole assortment, everything else is removed. Unknown products: InputError
        (nothing applied); unregistered store: LookupError."""
        now = self.db.clock()
        with self.db.write() as conn:
            _require_store(conn, store)
            ids = json.dumps([item.product_id for item in listings])
            known = {r[0] for r in conn.execute(
                "SELECT product_id FROM products WHERE product_id IN "
                "(SELECT value FROM json_each(?))", (ids,))}
            unknown = [item.product_id for item in listings if item.product_id not in known]
            if unknown:
                raise InputError("unknown_products", "product_id",
                                 f"{len(unknown)} product(s) not in the catalog: "
                                 f"{', '.join(unknown[:20])}")
            current = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
                "SELECT product_id, zone, stock, listed FROM assortment WHERE store = ?",
                (store,))}
            changes = []
            for item in listings:
                zone, stock, listed = current.get(item.product_id, (None, 0, 0))
                new_stock = stock if item.stock is None else item.stock
                if listed and zone == item.zone and stock == new_stock:
                    continue
                changes.append((item.product_id, item.zone, new_stock))
            keep = {item.product_id for item in listings}
            removed = [pid for pid, (_, _, listed) in current.items()
                       if replace and listed and pid not in keep]
            first = HubDB.next_seq(conn, len(changes) + len(removed)) if changes or removed \
                else 0
            conn.executemany(
                "INSERT INTO assortment(store, product_id, zone, stock, listed, seq, updated_at) "
                "VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT(store, product_id) DO UPDATE SET "
                "zone = excluded.zone, stock = excluded.stock, listed = 1, seq = excluded.seq, "
                "updated_at = excluded.updated_at",
                [(store, pid, zone, stock, first + i, now)
                 for i, (pid, zone, stock) in enumerate(changes)],
            )
            self._unlist(conn, store, removed, first + len(changes), now)
        return {"listed": len(changes), "unchanged": len(listings) - len(changes),
                "removed": len(removed)}

    @staticmethod
    def _unlist(conn: sqlite3.Connection, store: str, product_ids: Sequence[str], first: int,
                now: float) -> None:
        conn.executemany(
            "UPDATE assortment SET listed = 0, seq = ?, updated_at = ? "
            "WHERE store = ? AND product_id = ?",
            [(first + i, now, store, pid) for i, pid in enumerate(product_ids)],
        )

    def remove_from_assortment(self, store: str, product_ids: Sequence[str]) -> int:
        now = self.db.clock()
        with self.db.write() as conn:
            _require_store(conn, store)
            listed = [r[0] for r in conn.execute(
                "SELECT product_id FROM assortment WHERE store = ? AND listed = 1 AND "
                "product_id IN (SELECT value FROM json_each(?))",
                (store, json.dumps(list(product_ids))))]
            if listed:
                self._unlist(conn, store, listed, HubDB.next_seq(conn, len(listed)), now)
        return len(listed)

    def set_stock(self, store: str, stock: dict[str, int]) -> dict[str, Any]:
        """Bulk stock levels (e.g. the ERP's export). Products the store does not list are
        reported back as ``unknown`` and ignored; unchanged levels cost nothing."""
        now = self.db.clock()
        with self.db.write() as conn:
            _require_store(conn, store)
            current = {r[0]: r[1] for r in conn.execute(
                "SELECT product_id, stock FROM assortment WHERE store = ? AND listed = 1 AND "
                "product_id IN (SELECT value FROM json_each(?))",
                (store, json.dumps(list(stock))))}
            changed = [(pid, n) for pid, n in stock.items()
                       if pid in current and current[pid] != n]
            if changed:
                first = HubDB.next_seq(conn, len(changed))
                conn.executemany(
                    "UPDATE assortment SET stock = ?, seq = ?, updated_at = ? "
                    "WHERE store = ? AND product_id = ?",
                    [(n, first + i, now, store, pid) for i, (pid, n) in enumerate(changed)],
                )
        unknown = [pid for pid in stock if pid not in current]
        return {"updated": len(changed), "unchanged": len(current) - len(changed),
                "unknown": unknown[:100], "unknown_count": len(unknown)}

    def assortment(self, store: str, after: str = "", limit: int = 500) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT product_id, zone, stock, updated_at FROM assortment "
                "WHERE store = ? AND listed = 1 AND product_id > ? ORDER BY product_id LIMIT ?",
                (store, after, limit)).fetchall()
        return [{"product_id": r[0], "zone": r[1], "stock": r[2], "updated_at": r[3]}
                for r in rows]

    # ------------------------------------------------------------------ feed

    def catalog_feed(self, store: str, cursor: int, limit: int) -> FeedPage:
        """The store's changes after ``cursor``: upserts (product + stock + zone) and
        deletes (removed from the store or from the catalog)."""
        with self.db.read() as conn:
            rows = conn.execute(_FEED_SQL, (store, cursor, limit + 1)).fetchall()
            return feed_page(conn, rows, cursor, limit, _catalog_item)

    def counts(self) -> dict[str, int]:
        with self.db.read() as conn:
            return {"products": conn.execute("SELECT COUNT(*) FROM products").fetchone()[0]}


def _catalog_item(row: Sequence[Any]) -> dict[str, Any]:
    seq, product_id, listed, name, category, price, stock, zone, style_id = row
    if not listed or name is None:
        return {"op": "delete", "seq": seq, "product_id": product_id}
    return {"op": "upsert", "seq": seq, "product_id": product_id, "name": name,
            "category": category, "price": price, "stock": stock, "zone": zone,
            "style_id": style_id}
