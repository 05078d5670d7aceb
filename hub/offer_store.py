"""Offers at the hub and each store's offers feed.

The feed rows are ``offer_targets(store, offer_id)``: ``live = 1`` with the subjects list
(segment offers) or ``live = 0`` (a tombstone, sent as a delete). ``reconcile`` is the one
place that decides them: it compares what every store should hold (``hub.offers``
``store_targets`` over live, unexpired offers, segments evaluated over the members each store
holds) with what it was sent, and writes only the differences, each with a new sequence
number. It runs for every store after an offer or segment change (the change is in the feeds
at the next poll) and, per store, before serving that store's feed page when the last run is
older than ``catalog.offers_refresh_s``: segment membership moves with every basket and with
relevance, an expired offer turns into a delete, a newly registered store gets its "every
store" offers — all without a background thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from hub.catalog_rows import InputError
from hub.feeds import FeedPage, feed_page
from hub.offers import OfferSpec, store_targets
from hub.segment_store import eligible_by_store, load_segment
from hub.storage import HubDB

logger = logging.getLogger(__name__)

_OFFER_COLUMNS = ("offer_id, product_id, category, discount_pct, valid_from, valid_to, "
                  "segment, stores, title")
_FEED_SQL = (
    "SELECT t.seq, t.offer_id, t.live, t.subjects, o.product_id, o.category, o.discount_pct, "
    "o.valid_from, o.valid_to, o.segment, o.title FROM offer_targets t "
    "LEFT JOIN offers o USING (offer_id) WHERE t.store = ? AND t.seq > ? ORDER BY t.seq LIMIT ?"
)


def _spec(row: Sequence[Any]) -> OfferSpec:
    stores = json.loads(row[7]) if row[7] is not None else None
    return OfferSpec(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                     tuple(stores) if stores is not None else None, row[8])


def offer_status(spec: OfferSpec, withdrawn_at: float | None, now: float) -> str:
    if withdrawn_at is not None:
        return "withdrawn"
    if now >= spec.valid_to:
        return "expired"
    return "active" if now >= spec.valid_from else "scheduled"


def reconcile(conn: sqlite3.Connection, now: float, *, stores: Collection[str] | None = None,
              offer_ids: Collection[str] | None = None, rewrite: Collection[str] = ()) -> int:
    """Bring ``offer_targets`` of ``stores`` and ``offer_ids`` (default: all) in line with
    the offers, inside the caller's write transaction; ``rewrite``: offers whose content
    changed (their live rows get a new seq even if the targets did not move). Only a run
    over every offer counts as the stores' refresh. Returns the rows changed."""
    registered = [r[0] for r in conn.execute("SELECT store_id FROM stores ORDER BY store_id")]
    if stores is not None:
        wanted = set(stores)
        registered = [s for s in registered if s in wanted]
    only = None if offer_ids is None else set(offer_ids)
    offers = [_spec(r) for r in conn.execute(
        f"SELECT {_OFFER_COLUMNS} FROM offers WHERE withdrawn_at IS NULL AND valid_to > ?",
        (now,)) if only is None or r[0] in only]
    eligible: dict[str, dict[str, set[str]]] = {}
    for segment_id in sorted({o.segment for o in offers if o.segment}):
        segment = load_segment(conn, segment_id)
        eligible[segment_id] = {} if segment is None else \
            eligible_by_store(conn, segment, registered, now)
    desired: dict[tuple[str, str], str | None] = {}
    for offer in offers:
        by_store = eligible.get(offer.segment) if offer.segment else None
        for store, eligible_here in store_targets(offer, registered, by_store).items():
            desired[(store, offer.offer_id)] = \
                None if eligible_here is None else json.dumps(eligible_here)
    current = {(r[0], r[1]): (r[2], r[3]) for r in conn.execute(
        "SELECT store, offer_id, live, subjects FROM offer_targets "
        "WHERE store IN (SELECT value FROM json_each(?))", (json.dumps(registered),))
        if only is None or r[1] in only}
    changes: list[tuple[str, str, int, str | None]] = []
    for key, subjects in desired.items():
        if current.get(key) != (1, subjects) or key[1] in rewrite:
            changes.append((*key, 1, subjects))
    for key, (live, _) in current.items():
        if live and key not in desired:
            changes.append((*key, 0, None))
    if changes:
        first = HubDB.next_seq(conn, len(changes))
        conn.executemany(
            "INSERT OR REPLACE INTO offer_targets(store, offer_id, live, subjects, seq) "
            "VALUES (?, ?, ?, ?, ?)",
            [(store, oid, live, subjects, first + i)
             for i, (store, oid, live, subjects) in enumerate(changes)])
    if only is not None:
        return len(changes)
    seq = HubDB.current_seq(conn)
    conn.executemany(
        "INSERT OR REPLACE INTO offer_refresh(store, refreshed_at, refreshed_seq) "
        "VALUES (?, ?, ?)", [(store, now, seq) for store in registered])
    return len(changes)


class OfferStore:
    def __init__(self, db: HubDB, refresh_s: float = 60.0) -> None:
        self.db = db
        self.refresh_s = refresh_s

    def put(self, spec: OfferSpec) -> dict[str, Any]:
        """Create or replace (a withdrawn offer put again is live again). The segment must
        exist. Every store's feed is reconciled in the same transaction."""
        now = self.db.clock()
        row = (spec.product_id, spec.category, spec.discount_pct, spec.valid_from,
               spec.valid_to, spec.segment,
               json.dumps(list(spec.stores)) if spec.stores is not None else None, spec.title)
        with self.db.write() as conn:
            if spec.segment is not None and conn.execute(
                    "SELECT 1 FROM segments WHERE segment_id = ?", (spec.segment,)
            ).fetchone() is None:
                raise InputError("unknown_segment", "segment", f"no segment {spec.segment!r}")
            before = conn.execute(
                f"SELECT {_OFFER_COLUMNS}, withdrawn_at FROM offers WHERE offer_id = ?",
                (spec.offer_id,)).fetchone()
            same = before is not None and tuple(before[1:9]) == row and before[9] is None
            if not same:
                conn.execute(
                    f"INSERT INTO offers({_OFFER_COLUMNS}, withdrawn_at, created_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?) "
                    "ON CONFLICT(offer_id) DO UPDATE SET product_id = excluded.product_id, "
                    "category = excluded.category, discount_pct = excluded.discount_pct, "
                    "valid_from = excluded.valid_from, valid_to = excluded.valid_to, "
                    "segment = excluded.segment, stores = excluded.stores, "
                    "title = excluded.title, withdrawn_at = NULL, "
                    "updated_at = excluded.updated_at",
                    (spec.offer_id, *row, now, now))
            changed = reconcile(conn, now, offer_ids=[spec.offer_id],
                                rewrite=() if same else (spec.offer_id,))
        return {"offer_id": spec.offer_id, "created": before is None,
                "changed": not same, "feed_items": changed}

    def withdraw(self, offer_id: str) -> dict[str, Any] | None:
        """Withdraw (kept for the record); every store that had it gets a delete."""
        now = self.db.clock()
        with self.db.write() as conn:
            if not conn.execute("SELECT 1 FROM offers WHERE offer_id = ?",
                                (offer_id,)).fetchone():
                return None
            conn.execute("UPDATE offers SET withdrawn_at = ?, updated_at = ? "
                         "WHERE offer_id = ? AND withdrawn_at IS NULL", (now, now, offer_id))
            changed = reconcile(conn, now, offer_ids=[offer_id])
        return {"offer_id": offer_id, "withdrawn": True, "feed_items": changed}

    def retarget_segment(self, segment_id: str) -> int:
        """Reconcile the offers of one segment in every store (after its rule changed)."""
        with self.db.write() as conn:
            ids = [r[0] for r in conn.execute("SELECT offer_id FROM offers WHERE segment = ?",
                                              (segment_id,))]
            return reconcile(conn, self.db.clock(), offer_ids=ids) if ids else 0

    def list(self, offer_id: str | None = None) -> list[dict[str, Any]]:
        now = self.db.clock()
        where, args = ("WHERE offer_id = ?", (offer_id,)) if offer_id else ("", ())
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT {_OFFER_COLUMNS}, withdrawn_at, created_at, updated_at, "
                "(SELECT json_group_array(store) FROM offer_targets t "
                " WHERE t.offer_id = o.offer_id AND t.live = 1) "
                f"FROM offers o {where} ORDER BY offer_id", args).fetchall()
        out = []
        for r in rows:
            spec = _spec(r)
            out.append({**spec.as_dict(), "status": offer_status(spec, r[9], now),
                        "withdrawn_at": r[9], "created_at": r[10], "updated_at": r[11],
                        "sent_to": sorted(json.loads(r[12]))})
        return out

    def counts(self) -> dict[str, int]:
        now = self.db.clock()
        with self.db.read() as conn:
            live = conn.execute(
                "SELECT COUNT(*) FROM offers WHERE withdrawn_at IS NULL AND valid_from <= ? "
                "AND valid_to > ?", (now, now)).fetchone()[0]
        return {"offers_active": int(live)}

    # ------------------------------------------------------------------ feed

    def _maybe_reconcile(self, store: str) -> None:
        """Reconcile this store's targets when the last run is older than ``refresh_s``, or
        when a member was erased or left its profile feed since (a subject must leave a
        segment offer's list as soon as the store drops the profile, not a minute later)."""
        now = self.db.clock()
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT refreshed_at, refreshed_seq FROM offer_refresh WHERE store = ?",
                (store,)).fetchone()
            if row is not None and now - row[0] < self.refresh_s and conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM store_members WHERE store = ? AND seq > ? "
                    "AND op = 'delete') OR EXISTS (SELECT 1 FROM erasures WHERE seq > ?)",
                    (store, row[1], row[1])).fetchone()[0] == 0:
                return
        with self.db.write() as conn:
            changed = reconcile(conn, now, stores=[store])
        if changed:
            logger.info("offer targets of %s refreshed: %d feed item(s)", store, changed)

    def offers_feed(self, store: str, cursor: int, limit: int) -> FeedPage:
        self._maybe_reconcile(store)
        with self.db.read() as conn:
            rows = conn.execute(_FEED_SQL, (store, cursor, limit + 1)).fetchall()
            return feed_page(conn, rows, cursor, limit, _offer_item)


def _offer_item(row: Sequence[Any]) -> dict[str, Any]:
    seq, offer_id, live, subjects = row[:4]
    if not live or row[6] is None:
        return {"op": "delete", "seq": seq, "offer_id": offer_id}
    item = {"op": "upsert", "seq": seq, "offer_id": offer_id, "product_id": row[4],
            "category": row[5], "discount_pct": row[6], "valid_from": row[7],
            "valid_to": row[8]}
    if row[10] is not None:
        item["title"] = row[10]
    if row[9] is not None:
        item["segment"] = row[9]
        item["subjects"] = json.loads(subjects) if subjects is not None else []
    return item
