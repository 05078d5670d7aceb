"""A store's profile feed and the erasure feed (the hub side of the sync contract).

The profile feed is the store's ``store_members`` rows after the cursor, merged with every
erasure after the cursor (as ``delete / erased``; the erasure record is the only place the
subject of an erased member is kept, see ``hub.dsr``). One ordered index scan per side, with
the member row and aggregates joined in; the purchase history of the page's upserts comes from
a second query over ``purchases(subject, ts)`` (last ``history_max_baskets`` per member).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from typing import Any

from hub.feeds import FeedPage, feed_page
from hub.members import expire_relevance
from hub.settings import RelevanceSettings
from hub.storage import HubDB
from hub.tokens import SCOPES

_PROFILES_SQL = (
    "SELECT sm.seq, sm.subject, sm.op, sm.reason, m.first_name, m.tier, m.birthday, "
    "m.preferences, m.consent, m.home_store, a.baskets, a.total_spend, a.last_purchase_ts "
    "FROM store_members sm LEFT JOIN members m ON m.subject = sm.subject "
    "LEFT JOIN aggregates a ON a.subject = sm.subject "
    "WHERE sm.store = ? AND sm.seq > ? "
    "UNION ALL SELECT seq, subject, 'delete', 'erased', NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL FROM erasures WHERE seq > ? "
    "ORDER BY 1 LIMIT ?"
)
# Baskets ranked newest first per member; lines of the newest N baskets.
_HISTORY_SQL = (
    "SELECT subject, basket_id, ts, product_id, quantity, unit_price, category FROM ("
    " SELECT p.*, DENSE_RANK() OVER (PARTITION BY p.subject ORDER BY p.ts DESC, p.basket_id DESC)"
    " AS r FROM purchases p WHERE p.subject IN (SELECT value FROM json_each(?))"
    ") WHERE r <= ? ORDER BY subject, ts DESC, id"
)
_ERASURES_SQL = (
    "SELECT seq, erasure_id, subject, requested_at FROM erasures WHERE seq > ? "
    "ORDER BY seq LIMIT ?"
)


def _histories(conn: sqlite3.Connection, subjects: list[str],
               max_baskets: int) -> dict[str, list[dict[str, Any]]]:
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not subjects:
        return history
    for s, basket, ts, product, qty, price, category in conn.execute(
        _HISTORY_SQL, (json.dumps(subjects), max_baskets)
    ):
        history[s].append({"basket_id": basket, "ts": ts, "product_id": product,
                           "quantity": qty, "price": price, "category": category})
    return history


def _item(row: Any, history: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    seq, subject, op, reason = row[0], row[1], row[2], row[3]
    if op == "delete" or row[8] is None:  # a delete, or a member row gone since
        return {"op": "delete", "seq": seq, "subject": subject, "reason": reason or "erased"}
    consent = json.loads(row[8])
    return {
        "op": "upsert", "seq": seq, "subject": subject,
        "profile": {
            "first_name": row[4], "tier": row[5], "birthday": row[6],
            "preferences": json.loads(row[7]),
            "consent": {p: consent.get(p) is True for p in SCOPES},
            "home_store": row[9],
        },
        "aggregates": {"baskets": row[10] or 0, "total_spend": row[11] or 0.0,
                       "last_purchase_ts": row[12]},
        "history": history.get(subject, []),
    }


def profiles_page(db: HubDB, store: str, cursor: int, limit: int,
                  cfg: RelevanceSettings) -> FeedPage:
    expire_relevance(db, store)
    with db.read() as conn:
        rows = conn.execute(_PROFILES_SQL, (store, cursor, cursor, limit + 1)).fetchall()
        upserts = [r[1] for r in rows[:limit] if r[2] == "upsert"]
        history = _histories(conn, upserts, cfg.history_max_baskets)
        return feed_page(conn, rows, cursor, limit, lambda r: _item(r, history))


def erasures_page(db: HubDB, cursor: int, limit: int) -> FeedPage:
    with db.read() as conn:
        rows = conn.execute(_ERASURES_SQL, (cursor, limit + 1)).fetchall()
        return feed_page(conn, rows, cursor, limit, lambda r: {
            "erasure_id": r[1], "subject": r[2], "requested_at": r[3], "seq": r[0]})
