"""Events pushed by a store: validated per event, stored once, applied in one transaction.

Idempotence: ``events.event_id`` is the primary key, so a batch re-sent after a lost answer
(the edge deletes its outbox rows only after the hub answered) comes back as duplicates and
changes nothing. Refusals are permanent (``bad_event``, ``erased``): the edge drops them.

Speed: one ``BEGIN IMMEDIATE`` transaction per batch and ``executemany`` for every table;
per-member work (aggregates, presence, relevance) is grouped by subject first, so a batch of
1000 baskets costs a handful of statements per member, not per line.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.members import erased_subjects, mark_presence, refresh_relevance
from hub.settings import RelevanceSettings
from hub.storage import HubDB

EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")  # as the edge's messages
ITEM_ID = EVENT_ID
VISIT_KINDS = ("pos_basket", "checkin")
MAX_LINES = 200
MAX_PAYLOAD_BYTES = 64 * 1024


class BadEvent(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    kind: str
    subject: str | None
    payload: dict[str, Any]
    created_at: float
    body: str  # the payload as stored


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "refused": self.refused}


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadEvent(f"{name} is not a finite number")
    return float(value)


def parse_event(raw: Any) -> Event:
    """One event of the batch, checked like the contract says; ``BadEvent`` otherwise."""
    if not isinstance(raw, Mapping):
        raise BadEvent("event is not an object")
    event_id, kind, subject = raw.get("event_id"), raw.get("kind"), raw.get("subject")
    if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        raise BadEvent("event_id missing or malformed")
    if not isinstance(kind, str) or not KIND.match(kind):
        raise BadEvent("kind missing or malformed")
    if subject is not None and (not isinstance(subject, str) or not SUBJECT.match(subject)):
        raise BadEvent("subject malformed")
    payload = raw.get("payload")
    if not isinstance(payload, dict):
        raise BadEvent("payload is not an object")
    created_at = _number(raw.get("created_at"), "created_at")
    body = json.dumps(payload, separators=(",", ":"))
    if len(body) > MAX_PAYLOAD_BYTES:
        raise BadEvent("payload too large")
    return Event(event_id, kind, subject, payload, created_at, body)


def basket_lines(event: Event) -> tuple[str, float, list[tuple[str, float, float | None, Any]]]:
    """(basket_id, ts, [(product_id, quantity, unit_price, category)]) of a pos_basket."""
    p = event.payload
    basket_id = p.get("basket_id")
    if not isinstance(basket_id, str) or not ITEM_ID.match(basket_id):
        raise BadEvent("pos_basket without a basket_id")
    if p.get("subject") not in (None, event.subject):
        raise BadEvent("payload subject differs from the event's")
    ts = _number(p.get("ts", event.created_at), "ts")
    lines = p.get("lines")
    if not isinstance(lines, list) or not 0 < len(lines) <= MAX_LINES:
        raise BadEvent(f"pos_basket needs 1..{MAX_LINES} lines")
    out = []
    for line in lines:
        if not isinstance(line, Mapping):
            raise BadEvent("basket line is not an object")
        product = line.get("product_id")
        if not isinstance(product, str) or not ITEM_ID.match(product):
            raise BadEvent("basket line without a product_id")
        quantity = _number(line.get("quantity"), "quantity")
        price = line.get("unit_price")
        price = None if price is None else _number(price, "unit_price")
        category = line.get("category")
        out.append((product, quantity, price, category if isinstance(category, str) else None))
    return basket_id, ts, out


def ingest(
    db: HubDB, store: str, raw_events: Sequence[Any], cfg: RelevanceSettings
) -> IngestResult:
    """Store and apply one batch from ``store``; the answer names every event id once."""
    result = IngestResult()
    parsed: list[Event] = []
    baskets: dict[str, tuple[str, float, list[Any]]] = {}
    seen: set[str] = set()
    for raw in raw_events:
        try:
            event = parse_event(raw)
            if event.kind == "pos_basket":
                baskets[event.event_id] = basket_lines(event)
        except BadEvent as exc:
            event_id = raw.get("event_id") if isinstance(raw, Mapping) else None
            result.refused.append({"event_id": str(event_id)[:64], "reason": "bad_event",
                                   "detail": str(exc)})
            continue
        if event.event_id in seen:
            result.duplicates.append(event.event_id)
            continue
        seen.add(event.event_id)
        parsed.append(event)
    if not parsed:
        return result
    now = db.clock()
    with db.write() as conn:
        erased = erased_subjects(conn, (e.subject for e in parsed if e.subject))
        known = {
            r[0] for r in conn.execute(
                "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))",
                (json.dumps([e.event_id for e in parsed]),),
            )
        }
        fresh: list[Event] = []
        for event in parsed:
            if event.event_id in known:
                result.duplicates.append(event.event_id)
            elif event.subject in erased:
                result.refused.append({"event_id": event.event_id, "reason": "erased"})
            else:
                fresh.append(event)
        conn.executemany(
            "INSERT INTO events(event_id, store, kind, subject, payload, created_at, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e.event_id, store, e.kind, e.subject, e.body, e.created_at, now) for e in fresh],
        )
        _apply(db, conn, store, fresh, baskets, cfg)
    result.accepted.extend(e.event_id for e in fresh)
    return result


def _with_categories(conn: Any, lines: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Fill a line's category from the hub catalog when the till did not send one (the
    feed's history carries it to every store, also those that do not sell the product)."""
    missing = sorted({line[5] for line in lines if line[8] is None})
    if not missing:
        return lines
    try:
        known = dict(conn.execute(
            "SELECT product_id, category FROM products "
            "WHERE product_id IN (SELECT value FROM json_each(?))", (json.dumps(missing),)
        ).fetchall())
    except sqlite3.OperationalError:  # a hub without the catalog part
        return lines
    return [(*line[:8], known.get(line[5])) if line[8] is None else line for line in lines]


def _apply(db: HubDB, conn: Any, store: str, events: Sequence[Event],
           baskets: Mapping[str, tuple[str, float, list[Any]]], cfg: RelevanceSettings) -> None:
    """Purchases, member aggregates, visits and feed relevance of the accepted events."""
    lines: list[tuple[Any, ...]] = []
    spend: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, -math.inf])
    visits: dict[tuple[str, str], float] = {}
    for event in events:
        if event.kind not in VISIT_KINDS:
            continue
        ts = event.created_at
        if event.kind == "pos_basket":
            basket_id, ts, items = baskets[event.event_id]
            lines.extend((event.subject, store, event.event_id, basket_id, ts, product, qty,
                          price, category) for product, qty, price, category in items)
            if event.subject:
                agg = spend[event.subject]
                agg[0] += 1
                agg[1] += sum(qty * (price or 0.0) for _, qty, price, _ in items)
                agg[2] = max(agg[2], ts)
        if event.subject:
            key = (event.subject, store)
            visits[key] = max(visits.get(key, ts), ts)
    conn.executemany(
        "INSERT INTO purchases(subject, store, event_id, basket_id, ts, product_id, quantity, "
        "unit_price, category) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _with_categories(conn, lines),
    )
    now = db.clock()
    conn.executemany(
        "INSERT INTO aggregates(subject, baskets, total_spend, last_purchase_ts, updated_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(subject) DO UPDATE SET "
        "baskets = baskets + excluded.baskets, total_spend = total_spend + excluded.total_spend,"
        " last_purchase_ts = MAX(COALESCE(last_purchase_ts, excluded.last_purchase_ts), "
        "excluded.last_purchase_ts), updated_at = excluded.updated_at",
        [(s, int(a[0]), a[1], a[2], now) for s, a in spend.items()],
    )
    if not visits:
        return
    mark_presence(db, conn, visits)
    subjects = sorted({s for s, _ in visits})
    members = {
        r[0] for r in conn.execute(
            "SELECT subject FROM members WHERE subject IN (SELECT value FROM json_each(?))",
            (json.dumps(subjects),),
        )
    }
    # New aggregates / history: every store carrying the member gets the change. A check-in
    # alone only matters to the store it makes the member relevant to.
    refresh_relevance(db, conn, members & set(spend), cfg)
    refresh_relevance(db, conn, members - set(spend), cfg, data_changed=False)
