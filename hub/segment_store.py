"""Segments at the hub: stored rule documents, evaluated over the members' aggregates.

Evaluation reads members + aggregates in one snapshot and runs the compiled rule
(``hub.segments``) in Python: rules are small, members are 10,000s, and one evaluation path
(no SQL translation of the rule) means the count the central team sees is exactly the set an
offer is sent to.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from typing import Any

from hub.segments import Facts, Segment, compile_rule, evaluate, member_facts
from hub.storage import HubDB

_MEMBER_SQL = (
    "SELECT m.subject, a.baskets, a.total_spend, a.last_purchase_ts, m.tier, m.home_store "
    "FROM members m LEFT JOIN aggregates a USING (subject)"
)
# Members a store holds a profile for (its profile feed's live rows): the only subjects it
# may be told about, and the only ones it could recognise.
_STORE_MEMBER_SQL = (
    "SELECT sm.store, m.subject, a.baskets, a.total_spend, a.last_purchase_ts, m.tier, "
    "m.home_store FROM store_members sm JOIN members m USING (subject) "
    "LEFT JOIN aggregates a USING (subject) "
    "WHERE sm.op = 'upsert' AND sm.relevant_until > ? "
    "AND sm.store IN (SELECT value FROM json_each(?))"
)


class SegmentInUse(ValueError):
    """A segment still targeted by a live offer cannot be deleted."""


def _facts(row: tuple[Any, ...], now: float) -> Facts:
    baskets, spend, last_ts, tier, home = row
    return member_facts(baskets=baskets, total_spend=spend, last_purchase_ts=last_ts,
                        tier=tier, home_store=home, now=now)


def iter_members(conn: sqlite3.Connection, now: float) -> Iterator[tuple[str, Facts]]:
    for row in conn.execute(_MEMBER_SQL):
        yield row[0], _facts(row[1:], now)


def load_segment(conn: sqlite3.Connection, segment_id: str) -> Segment | None:
    row = conn.execute("SELECT rule FROM segments WHERE segment_id = ?",
                       (segment_id,)).fetchone()
    return None if row is None else compile_rule(json.loads(row[0]))


def eligible_by_store(conn: sqlite3.Connection, segment: Segment, stores: Iterable[str],
                      now: float) -> dict[str, set[str]]:
    """Per store, the segment's members that store currently holds a profile for."""
    out: dict[str, set[str]] = {}
    verdict: dict[str, bool] = {}
    for row in conn.execute(_STORE_MEMBER_SQL, (now, json.dumps(sorted(set(stores))))):
        store, subject = row[0], row[1]
        hit = verdict.get(subject)
        if hit is None:
            hit = verdict[subject] = segment.matches(_facts(row[2:], now))
        if hit:
            out.setdefault(store, set()).add(subject)
    return out


class SegmentStore:
    def __init__(self, db: HubDB) -> None:
        self.db = db

    def put(self, segment_id: str, name: str | None, segment: Segment) -> bool:
        """Create or replace; returns True when the rule or name changed."""
        now = self.db.clock()
        rule = json.dumps(segment.rule, sort_keys=True)
        with self.db.write() as conn:
            before = conn.execute("SELECT name, rule FROM segments WHERE segment_id = ?",
                                  (segment_id,)).fetchone()
            if before is not None and tuple(before) == (name, rule):
                return False
            conn.execute(
                "INSERT INTO segments(segment_id, name, rule, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(segment_id) DO UPDATE SET "
                "name = excluded.name, rule = excluded.rule, updated_at = excluded.updated_at",
                (segment_id, name, rule, now, now))
        return True

    def get(self, segment_id: str | None = None) -> list[dict[str, Any]]:
        """One segment (a list of 0 or 1) or all, with the offers that target each."""
        where, args = ("WHERE segment_id = ?", (segment_id,)) if segment_id else ("", ())
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT segment_id, name, rule, created_at, updated_at, "
                "(SELECT json_group_array(offer_id) FROM offers o "
                " WHERE o.segment = s.segment_id AND o.withdrawn_at IS NULL) "
                f"FROM segments s {where} ORDER BY segment_id", args).fetchall()
        return [{"segment_id": r[0], "name": r[1], "rule": json.loads(r[2]),
                 "created_at": r[3], "updated_at": r[4], "offers": json.loads(r[5])}
                for r in rows]

    def delete(self, segment_id: str) -> bool:
        now = self.db.clock()
        with self.db.write() as conn:
            users = [r[0] for r in conn.execute(
                "SELECT offer_id FROM offers WHERE segment = ? AND withdrawn_at IS NULL "
                "AND valid_to > ?", (segment_id, now))]
            if users:
                raise SegmentInUse(", ".join(users))
            return conn.execute("DELETE FROM segments WHERE segment_id = ?",
                                (segment_id,)).rowcount > 0

    def members(self, segment: Segment, *, store: str | None = None,
                limit: int = 1000) -> dict[str, Any]:
        """Count and (the first ``limit``) subjects of the segment, chain-wide or among the
        members one store holds."""
        now = self.db.clock()
        with self.db.read() as conn:
            if store is None:
                subjects = evaluate(segment, iter_members(conn, now))
            else:
                subjects = sorted(eligible_by_store(conn, segment, [store], now).get(store, ()))
        return {"count": len(subjects), "subjects": subjects[:limit],
                "truncated": len(subjects) > limit, "evaluated_at": now}

    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0])
