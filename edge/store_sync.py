"""Hub sync writes of the edge store: one feed page = ONE transaction, cursor included.

A mixin of ``EdgeStore`` (split out to keep files small): it relies on ``_write()``, the
store's ``BEGIN IMMEDIATE`` transaction under the writer lock. The sync threads call these
directly instead of going through the event worker: they touch SQLite only (no worker state),
the write lock serialises them with the worker's writes, and a 1,000-profile page holds the
lock for tens of milliseconds instead of queueing behind check-ins. Writing a page's cursor
in the page's own transaction means a crash either applied the page and moved the cursor or
did neither; re-reading a page is harmless because every item is an upsert or a delete.

``SyncReader`` is the sync threads' own read-only connection (one per thread).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from edge.store_events import INSERT_PURCHASE
from edge.store_reader import connect_readonly
from edge.store_rows import dump_json
from edge.sync_items import CatalogUpsert, OfferUpsert, ProfileUpsert, Removal
from edge.sync_plan import OutboxRow

_SUBJECT_CHUNK = 500  # bound on "?" parameters per IN (...) query
_PROFILE_UPSERT = (
    "INSERT INTO profiles(subject, first_name, tier, birthday, preferences, consent, "
    "home_store, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(subject) DO UPDATE SET first_name = excluded.first_name, "
    "tier = excluded.tier, birthday = excluded.birthday, preferences = excluded.preferences, "
    "consent = excluded.consent, home_store = excluded.home_store, "
    "updated_at = excluded.updated_at"
)
# An update, not a replace: the offers_upd trigger bumps offers_version only on a change.
OFFER_UPSERT = (
    "INSERT INTO offers(offer_id, product_id, category, discount_pct, valid_from, valid_to) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(offer_id) DO UPDATE SET "
    "product_id = excluded.product_id, category = excluded.category, "
    "discount_pct = excluded.discount_pct, valid_from = excluded.valid_from, "
    "valid_to = excluded.valid_to"
)
# Seeding (``EdgeStore.upsert_catalog``) and the catalog feed write items the same way; an
# update, not a replace, so the catalog_upd trigger bumps catalog_version only on a change.
CATALOG_UPSERT = (
    "INSERT INTO catalog(product_id, name, category, price, stock, zone, style_id, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(product_id) DO UPDATE SET "
    "name = excluded.name, category = excluded.category, price = excluded.price, "
    "stock = excluded.stock, zone = excluded.zone, style_id = excluded.style_id, "
    "updated_at = excluded.updated_at"
)
_CURSOR_SAVE = (
    "INSERT INTO sync_feeds(feed, cursor, last_success_at, items_applied) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(feed) DO UPDATE SET cursor = excluded.cursor, "
    "last_success_at = COALESCE(excluded.last_success_at, sync_feeds.last_success_at), "
    "items_applied = sync_feeds.items_applied + excluded.items_applied"
)


class SyncWrites:
    """Writes of the hub sync (feeds, erasure receipts, check-in keys)."""

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    @staticmethod
    def _save_cursor(
        conn: sqlite3.Connection, feed: str, cursor: str, done_at: float | None, applied: int
    ) -> None:
        conn.execute(_CURSOR_SAVE, (feed, cursor, done_at, applied))

    def save_cursor(self, feed: str, cursor: str, done_at: float | None) -> None:
        """Record progress of a feed page that changed nothing (or a caught-up poll)."""
        with self._write() as conn:
            self._save_cursor(conn, feed, cursor, done_at, 0)

    def apply_profile_page(
        self,
        upserts: Sequence[ProfileUpsert],
        removals: Sequence[Removal],
        *,
        cursor: str,
        done_at: float | None,
        now: float,
    ) -> int:
        """Profiles, aggregates and history of many members + the cursor, in one transaction.

        The hub's record is authoritative, except for this store's baskets still waiting in
        the outbox (the hub has not seen them yet): their lines are kept and counted on top,
        so a member's own basket does not vanish from the till's view for a sync round.
        A removal (consent revoked, no longer relevant) drops the profile, aggregates and the
        link of the member's purchase lines (kept anonymously for store popularity);
        full erasure goes through ``delete_member``.
        """
        subjects = [u.subject for u in upserts]
        with self._write() as conn:
            pending = _pending_baskets(conn, subjects)
            conn.executemany(_PROFILE_UPSERT, [
                (u.subject, u.first_name, u.tier, u.birthday, dump_json(u.preferences),
                 dump_json(u.consent), u.home_store, now) for u in upserts
            ])
            stored = _stored_histories(conn, [s for s in subjects if s not in pending])
            same = {  # most deltas (a tier, a consent) leave the history as it is
                u.subject for u in upserts
                if u.subject not in pending and stored.get(u.subject, Counter()) == Counter(
                    u.history)
            }
            conn.executemany(
                "DELETE FROM purchases WHERE subject = ?",
                [(s,) for s in subjects if s not in pending and s not in same],
            )
            lines: list[tuple[object, ...]] = []
            aggregates: list[tuple[ProfileUpsert, set[str]]] = []
            for u in upserts:
                if u.subject in same:
                    aggregates.append((u, set()))
                    continue
                kept = pending.get(u.subject, set())
                if kept:
                    marks = ",".join("?" * len(kept))
                    conn.execute(
                        f"DELETE FROM purchases WHERE subject = ? AND basket_id NOT IN ({marks})",
                        (u.subject, *sorted(kept)),
                    )
                hub_baskets = {line.basket_id for line in u.history}
                lines.extend(
                    (u.subject, *h)
                    for h in u.history if h.basket_id not in kept
                )
                extra = kept - hub_baskets
                aggregates.append((u, extra))
            conn.executemany(INSERT_PURCHASE, lines)
            conn.executemany(
                "INSERT OR REPLACE INTO aggregates(subject, baskets, total_spend, "
                "last_purchase_ts, updated_at) VALUES (?, ?, ?, ?, ?)",
                [(u.subject, u.baskets, u.total_spend, u.last_purchase_ts, now)
                 for u, extra in aggregates if not extra],
            )
            for u, extra in aggregates:
                if extra:
                    _aggregates_with_pending(conn, u, extra, now)
            gone = [(r.key,) for r in removals]
            # a member the store no longer holds is no longer targeted here either
            for table in ("profiles", "aggregates", "offer_subjects"):
                conn.executemany(f"DELETE FROM {table} WHERE subject = ?", gone)
            conn.executemany("UPDATE purchases SET subject = NULL WHERE subject = ?", gone)
            self._save_cursor(conn, "profiles", cursor, done_at, len(upserts) + len(removals))
        return len(upserts) + len(removals)

    def apply_catalog_page(
        self,
        upserts: Sequence[CatalogUpsert],
        removals: Sequence[Removal],
        *,
        cursor: str,
        done_at: float | None,
        now: float,
    ) -> int:
        """Assortment + stock of this store; the catalog triggers bump ``catalog_version``,
        which is how the worker's in-stock cache learns of the change."""
        with self._write() as conn:
            conn.executemany(CATALOG_UPSERT, [c.row(now) for c in upserts])
            conn.executemany(
                "DELETE FROM catalog WHERE product_id = ?", [(r.key,) for r in removals]
            )
            self._save_cursor(conn, "catalog", cursor, done_at, len(upserts) + len(removals))
        return len(upserts) + len(removals)

    def apply_offers_page(
        self,
        upserts: Sequence[OfferUpsert],
        removals: Sequence[Removal],
        *,
        cursor: str,
        done_at: float | None,
    ) -> int:
        """Offers + the subjects of segment offers; an upsert replaces an offer's targeting,
        a delete takes it along (trigger). The triggers bump ``offers_version``, the
        ranking's offers cache key."""
        ids = [(o.offer_id,) for o in upserts]
        with self._write() as conn:
            conn.executemany(OFFER_UPSERT, [o.row() for o in upserts])
            conn.executemany("DELETE FROM offer_segments WHERE offer_id = ?", ids)
            conn.executemany("DELETE FROM offer_subjects WHERE offer_id = ?", ids)
            conn.executemany(
                "INSERT INTO offer_segments(offer_id, segment) VALUES (?, ?)",
                [(o.offer_id, o.segment) for o in upserts if o.subjects is not None],
            )
            conn.executemany(
                "INSERT INTO offer_subjects(offer_id, subject) VALUES (?, ?)",
                [(o.offer_id, s) for o in upserts if o.subjects for s in o.subjects],
            )
            conn.executemany("DELETE FROM offers WHERE offer_id = ?", [(r.key,) for r in removals])
            self._save_cursor(conn, "offers", cursor, done_at, len(upserts) + len(removals))
        return len(upserts) + len(removals)

    def record_erasures(
        self, erasure_ids: Iterable[str], *, cursor: str, done_at: float | None, now: float
    ) -> None:
        """Receipts of erasures applied (not yet acked) + the erasure feed's cursor."""
        ids = list(erasure_ids)
        with self._write() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO erasure_receipts(erasure_id, applied_at) VALUES (?, ?)",
                [(e, now) for e in ids],
            )
            self._save_cursor(conn, "erasures", cursor, done_at, len(ids))

    def mark_erasure_acked(self, erasure_id: str, now: float) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE erasure_receipts SET acked_at = ? WHERE erasure_id = ?", (now, erasure_id)
            )

    def save_sync_keys(self, jwks: dict[str, dict[str, object]], now: float) -> None:
        """The hub's current check-in keys replace the stored ones."""
        with self._write() as conn:
            conn.execute("DELETE FROM sync_keys")
            conn.executemany(
                "INSERT INTO sync_keys(kid, jwk, fetched_at) VALUES (?, ?, ?)",
                [(kid, dump_json(jwk), now) for kid, jwk in sorted(jwks.items())],
            )


def _pending_baskets(conn: sqlite3.Connection, subjects: Sequence[str]) -> dict[str, set[str]]:
    """Basket ids of these members still queued for the hub (their POS events)."""
    pending: dict[str, set[str]] = {}
    for start in range(0, len(subjects), _SUBJECT_CHUNK):
        chunk = subjects[start:start + _SUBJECT_CHUNK]
        marks = ",".join("?" * len(chunk))
        for subject, basket_id in conn.execute(
            "SELECT subject, json_extract(payload, '$.basket_id') FROM outbox "
            f"WHERE kind = 'pos_basket' AND subject IN ({marks})",
            chunk,
        ):
            if isinstance(basket_id, str):
                pending.setdefault(subject, set()).add(basket_id)
    return pending


def _stored_histories(
    conn: sqlite3.Connection, subjects: Sequence[str]
) -> dict[str, Counter[tuple[object, ...]]]:
    """The purchase lines held for these members, as multisets comparable to a feed's."""
    stored: dict[str, Counter[tuple[object, ...]]] = {}
    for start in range(0, len(subjects), _SUBJECT_CHUNK):
        chunk = subjects[start:start + _SUBJECT_CHUNK]
        marks = ",".join("?" * len(chunk))
        for subject, *line in conn.execute(
            "SELECT subject, basket_id, ts, product_id, quantity, unit_price, category "
            f"FROM purchases WHERE subject IN ({marks})",
            chunk,
        ):
            stored.setdefault(subject, Counter())[tuple(line)] += 1
    return stored


def _aggregates_with_pending(
    conn: sqlite3.Connection, u: ProfileUpsert, extra: set[str], now: float
) -> None:
    marks = ",".join("?" * len(extra))
    baskets, spend, last = conn.execute(
        "SELECT COUNT(DISTINCT basket_id), COALESCE(SUM(quantity * COALESCE(unit_price, 0)), 0),"
        f" MAX(ts) FROM purchases WHERE subject = ? AND basket_id IN ({marks})",
        (u.subject, *sorted(extra)),
    ).fetchone()
    latest = max((t for t in (u.last_purchase_ts, last) if t is not None), default=None)
    conn.execute(
        "INSERT OR REPLACE INTO aggregates(subject, baskets, total_spend, last_purchase_ts, "
        "updated_at) VALUES (?, ?, ?, ?, ?)",
        (u.subject, u.baskets + int(baskets), u.total_spend + float(spend), latest, now),
    )


class SyncReader:
    """Read-only queries of one sync thread (its own connection; WAL: never blocks writes)."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self._conn = connect_readonly(path, busy_timeout_ms)

    def close(self) -> None:
        self._conn.close()

    def feed_state(self) -> dict[str, tuple[str, float | None]]:
        """``{feed: (cursor, last_success_at)}`` of the feeds seen so far."""
        rows = self._conn.execute("SELECT feed, cursor, last_success_at FROM sync_feeds")
        return {feed: (cursor, at) for feed, cursor, at in rows}

    def outbox_batch(self, limit: int, after_seq: int = 0) -> list[OutboxRow]:
        rows = self._conn.execute(
            "SELECT seq, event_id, kind, subject, payload, created_at FROM outbox "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
        return [OutboxRow(*row) for row in rows]

    def outbox_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def held_subjects(self, subjects: Sequence[str]) -> set[str]:
        """Which of ``subjects`` have a profile here (new ones change the broker's users)."""
        held: set[str] = set()
        for start in range(0, len(subjects), _SUBJECT_CHUNK):
            chunk = list(subjects[start:start + _SUBJECT_CHUNK])
            marks = ",".join("?" * len(chunk))
            held.update(row[0] for row in self._conn.execute(
                f"SELECT subject FROM profiles WHERE subject IN ({marks})", chunk))
        return held

    def known_erasures(self, erasure_ids: Sequence[str]) -> set[str]:
        marks = ",".join("?" * len(erasure_ids))
        return {
            row[0] for row in self._conn.execute(
                f"SELECT erasure_id FROM erasure_receipts WHERE erasure_id IN ({marks})",
                list(erasure_ids),
            )
        } if erasure_ids else set()

    def unacked_erasures(self, limit: int = 1000) -> list[str]:
        return [
            row[0] for row in self._conn.execute(
                "SELECT erasure_id FROM erasure_receipts WHERE acked_at IS NULL "
                "ORDER BY applied_at LIMIT ?",
                (limit,),
            )
        ]

    def sync_keys(self) -> dict[str, dict[str, object]]:
        return {kid: json.loads(jwk) for kid, jwk in self._conn.execute(
            "SELECT kid, jwk FROM sync_keys")}


