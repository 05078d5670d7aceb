"""Data subject requests at the hub: export everything held on a member, or erase it.

Erasure deletes the member's personal data and events from every subject-keyed table
(``ERASE_TABLES``; hub parts that keep member data add their table there) and keeps ONE
minimal record: ``erasures(erasure_id, subject, requested_at, seq)``. Why keep the subject:
- late events: a store may still push events of that member that were queued before it
  learnt of the erasure; without the subject the hub could not refuse them and would
  re-create the member's data (``refused: erased``);
- stores: every store gets the erasure (feed + ack) until it acknowledged, possibly days
  later (a store offline), so the subject must be known until then, and after it so that
  a store restored from an old backup can still be told;
- a stale CRM export must not re-import the member.
The subject is a pseudonym (HMAC of the loyalty number with the chain's secret): on its own it
names nobody; names, e-mail, birthday, purchases and events are gone. The WAL is checkpointed
and ``secure_delete`` is on, so the deleted rows do not linger in the file.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from hub.members import consent_history
from hub.storage import HubDB

logger = logging.getLogger(__name__)

# (table, subject column) of every table holding data about a member.
ERASE_TABLES: tuple[tuple[str, str], ...] = (
    ("members", "subject"),
    ("consent_events", "subject"),
    ("aggregates", "subject"),
    ("purchases", "subject"),
    ("presence", "subject"),
    ("store_members", "subject"),
    ("events", "subject"),
)


def _rows(conn: Any, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, args)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def export_member(db: HubDB, subject: str) -> dict[str, Any] | None:
    """Everything the hub holds on ``subject`` (None when it holds nothing at all)."""
    with db.read() as conn:
        members = _rows(conn, "SELECT * FROM members WHERE subject = ?", (subject,))
        erasure = _rows(conn, "SELECT erasure_id, requested_at FROM erasures WHERE subject = ?",
                        (subject,))
        purchases = _rows(conn, "SELECT store, event_id, basket_id, ts, product_id, quantity, "
                          "unit_price, category FROM purchases WHERE subject = ? ORDER BY ts, id",
                          (subject,))
        events = _rows(conn, "SELECT event_id, store, kind, payload, created_at, received_at "
                       "FROM events WHERE subject = ? ORDER BY created_at", (subject,))
        if not (members or erasure or purchases or events):
            return None
        profile = members[0] if members else None
        aggregates = _rows(conn, "SELECT baskets, total_spend, last_purchase_ts FROM aggregates "
                           "WHERE subject = ?", (subject,))
        if profile is not None:
            profile["preferences"] = json.loads(profile["preferences"])
            profile["consent"] = json.loads(profile["consent"])
        for event in events:
            event["payload"] = json.loads(event["payload"])
        return {
            "subject": subject,
            "profile": profile,
            "consent_history": consent_history(conn, subject),
            "aggregates": aggregates[0] if aggregates else None,
            "purchases": purchases,
            "visits": _rows(conn, "SELECT store, last_visit_ts, announced_at FROM presence "
                            "WHERE subject = ? ORDER BY store", (subject,)),
            "stores_holding_profile": _rows(
                conn, "SELECT store, op, reason FROM store_members WHERE subject = ? "
                "ORDER BY store", (subject,)),
            "events": events,
            "erasure": erasure[0] if erasure else None,
        }


def erase_member(db: HubDB, subject: str) -> tuple[dict[str, Any], bool]:
    """Erase ``subject``; returns (erasure record, created). Idempotent: a second request
    returns the first erasure (and deletes anything that arrived in between)."""
    now = db.clock()
    with db.write() as conn:
        removed = sum(
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (subject,)).rowcount
            for table, column in ERASE_TABLES
        )
        row = conn.execute(
            "SELECT erasure_id, requested_at, seq FROM erasures WHERE subject = ?", (subject,)
        ).fetchone()
        created = row is None
        if created:
            row = (f"er-{uuid.uuid4().hex}", now, db.next_seq(conn))
            conn.execute(
                "INSERT INTO erasures(erasure_id, subject, requested_at, seq) VALUES (?, ?, ?, ?)",
                (row[0], subject, row[1], row[2]),
            )
    db.checkpoint()
    logger.info("erased member %s (%d rows, erasure %s)", subject, removed, row[0])
    return {"erasure_id": row[0], "subject": subject, "requested_at": row[1],
            "rows_deleted": removed}, created


def ack_erasure(db: HubDB, store: str, erasure_id: str) -> float | None:
    """Record the store's acknowledgement (first time wins); None if the id is unknown."""
    with db.write() as conn:
        if conn.execute("SELECT 1 FROM erasures WHERE erasure_id = ?",
                        (erasure_id,)).fetchone() is None:
            return None
        conn.execute(
            "INSERT OR IGNORE INTO erasure_acks(erasure_id, store, acked_at) VALUES (?, ?, ?)",
            (erasure_id, store, db.clock()),
        )
        return float(conn.execute(
            "SELECT acked_at FROM erasure_acks WHERE erasure_id = ? AND store = ?",
            (erasure_id, store),
        ).fetchone()[0])


def erasure_status(db: HubDB, erasure_id: str) -> dict[str, Any] | None:
    """Which stores acknowledged the erasure (and when), which have not yet."""
    with db.read() as conn:
        row = conn.execute(
            "SELECT subject, requested_at FROM erasures WHERE erasure_id = ?", (erasure_id,)
        ).fetchone()
        if row is None:
            return None
        acks = dict(conn.execute(
            "SELECT store, acked_at FROM erasure_acks WHERE erasure_id = ?", (erasure_id,)
        ).fetchall())
        stores = [r[0] for r in conn.execute("SELECT store_id FROM stores ORDER BY store_id")]
    return {
        "erasure_id": erasure_id, "subject": row[0], "requested_at": row[1],
        "acknowledged": [{"store": s, "acked_at": acks[s]} for s in sorted(acks)],
        "pending": [s for s in stores if s not in acks],
        "complete": all(s in acks for s in stores),
    }
