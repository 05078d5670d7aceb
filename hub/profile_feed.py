"""A store's profile feed and the erasure feed (the hub side of the sync contract).

The profile feed is the store's ``store_members`` rows after the cursor, merged with every
erasure after the cursor (as ``delete / erased``; the erasure record is the only place the
subject of an erased member is kept, see ``hub.dsr``). One ordered index scan per side, with
the member row and aggregates joined in; the purchase history of the page's upserts comes from
one or two more queries over ``purchases(subject, ts)`` (last ``history_max_baskets``).
"""

from __future__ import annotations

import json
import sqlite3
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
# History lines serialised to JSON by SQLite itself: a 5000-member page carries ~10^5 lines,
# and building them as Python dicts (then encoding them) would be most of a page's cost.
# Members with at most N baskets (nearly all) need no ranking: their lines come straight off
# the (subject, ts) index; only the others go through the window query.
_LINE_JSON = (
    "json_group_array(json_object('basket_id', basket_id, 'ts', ts, 'product_id', product_id, "
    "'quantity', quantity, 'price', unit_price, 'category', category))"
)
_ALL_HISTORY_SQL = (
    f"SELECT subject, {_LINE_JSON} FROM purchases "
    "WHERE subject IN (SELECT value FROM json_each(?)) GROUP BY subject"
)
_RANKED_HISTORY_SQL = (
    f"SELECT subject, {_LINE_JSON} FROM ("
    " SELECT p.*, DENSE_RANK() OVER (PARTITION BY p.subject ORDER BY p.ts DESC, p.basket_id DESC)"
    " AS r FROM purchases p WHERE p.subject IN (SELECT value FROM json_each(?))"
    " ORDER BY p.subject, p.ts, p.id"
    ") WHERE r <= ? GROUP BY subject"
)
_ERASURES_SQL = (
    "SELECT seq, erasure_id, subject, requested_at FROM erasures WHERE seq > ? "
    "ORDER BY seq LIMIT ?"
)


def _histories(conn: sqlite3.Connection, rows: list[Any], max_baskets: int) -> dict[str, str]:
    """``{subject: JSON array of its last baskets' lines}`` for the page's upserts."""
    short = [r[1] for r in rows if r[2] == "upsert" and (r[10] or 0) <= max_baskets]
    long = [r[1] for r in rows if r[2] == "upsert" and (r[10] or 0) > max_baskets]
    history: dict[str, str] = {}
    if short:
        history.update(conn.execute(_ALL_HISTORY_SQL, (json.dumps(short),)).fetchall())
    if long:
        history.update(
            conn.execute(_RANKED_HISTORY_SQL, (json.dumps(long), max_baskets)).fetchall()
        )
    return history


def _item(row: Any, history: dict[str, str]) -> dict[str, Any] | str:
    """A delete as a dict; an upsert as its JSON text with the history spliced in."""
    seq, subject, op, reason = row[0], row[1], row[2], row[3]
    if op == "delete" or row[8] is None:  # a delete, or a member row gone since
        return {"op": "delete", "seq": seq, "subject": subject, "reason": reason or "erased"}
    consent = json.loads(row[8])
    head = json.dumps({
        "op": "upsert", "seq": seq, "subject": subject,
        "profile": {
            "first_name": row[4], "tier": row[5], "birthday": row[6],
            "preferences": json.loads(row[7]),
            "consent": {p: consent.get(p) is True for p in SCOPES},
            "home_store": row[9],
        },
        "aggregates": {"baskets": row[10] or 0, "total_spend": row[11] or 0.0,
                       "last_purchase_ts": row[12]},
    }, separators=(",", ":"))
    return f'{head[:-1]},"history":{history.get(subject, "[]")}}}'


def profiles_page(db: HubDB, store: str, cursor: int, limit: int,
                  cfg: RelevanceSettings) -> FeedPage:
    expire_relevance(db, store)
    with db.read() as conn:
        rows = conn.execute(_PROFILES_SQL, (store, cursor, cursor, limit + 1)).fetchall()
        history = _histories(conn, rows[:limit], cfg.history_max_baskets)
        return feed_page(conn, rows, cursor, limit, lambda r: _item(r, history))


def erasures_page(db: HubDB, cursor: int, limit: int) -> FeedPage:
    with db.read() as conn:
        rows = conn.execute(_ERASURES_SQL, (cursor, limit + 1)).fetchall()
        return feed_page(conn, rows, cursor, limit, lambda r: {
            "erasure_id": r[1], "subject": r[2], "requested_at": r[3], "seq": r[0]})
