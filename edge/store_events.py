"""Event writes of the edge store: each event's effect, mark and outbox row in one transaction.

A mixin of ``EdgeStore`` (split out only to keep files small): it relies on ``_write()``, the
store's ``BEGIN IMMEDIATE`` transaction under the writer lock, and on ``_clock``.
Idempotence: an inbound event is marked in ``processed_events`` inside the transaction that
applies it, and outbox rows are unique per ``event_id``, so a redelivery changes nothing.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from edge.store_rows import (
    StoreInputError,
    VisitRecord,
    dump_json,
    require_channel,
    require_number,
    require_text,
    stock_delta,
)

logger = logging.getLogger(__name__)

INSERT_PURCHASE = (
    "INSERT INTO purchases(subject, basket_id, ts, product_id, quantity, unit_price, category) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_OUTBOX = (
    "INSERT OR IGNORE INTO outbox(event_id, kind, subject, payload, created_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
_MARK = "INSERT OR IGNORE INTO processed_events(event_id, kind, ts) VALUES (?, ?, ?)"
_INSERT_IMPRESSION = (
    "INSERT INTO impressions(event_id, visit_id, subject, product_id, channel, rank, score, "
    "relevance, reasons, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_VISIT = (
    "INSERT INTO visits(visit_id, subject, started_at, ended_at, zone, confidence, checked_in) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(visit_id) DO UPDATE SET "
    "subject = excluded.subject, started_at = excluded.started_at, "
    "ended_at = excluded.ended_at, zone = excluded.zone, "
    "confidence = excluded.confidence, checked_in = excluded.checked_in"
)
_REMEMBER_TOKEN = "INSERT OR IGNORE INTO seen_tokens(token_id, expires_at) VALUES (?, ?)"

ImpressionItem = tuple[str, int, float, float, list[dict[str, Any]]]




@dataclass(frozen=True)
class ImpressionLog:
    """One shown list (a card or an app offer): its rows and its outbox event."""

    event_id: str
    visit_id: str
    subject: str | None
    channel: str
    ts: float
    items: Sequence[ImpressionItem]

    def encode(self) -> tuple[str, list[tuple[Any, ...]]]:
        """(outbox body, impression rows), validated."""
        require_text(self.event_id, "bad_event_id", "event_id")
        require_text(self.visit_id, "bad_impression", "visit_id")
        require_channel(self.channel)
        require_number(self.ts, "bad_impression", "ts")
        rows = []
        shown = []
        for product_id, rank, score, relevance, reasons in self.items:
            require_text(product_id, "bad_impression", "product_id")
            reasons_json = dump_json(reasons, "bad_impression")
            rows.append((self.event_id, self.visit_id, self.subject, product_id, self.channel,
                         int(rank), float(score), float(relevance), reasons_json, self.ts))
            shown.append({"product_id": product_id, "rank": int(rank), "score": float(score),
                          "relevance": float(relevance), "reasons": reasons})
        payload = {"event_id": self.event_id, "visit_id": self.visit_id,
                   "subject": self.subject, "channel": self.channel, "ts": self.ts,
                   "items": shown}
        return dump_json(payload, "bad_impression"), rows


class EventWrites:
    """Writes driven by events (POS, feedback, impressions, visits, tokens, outbox)."""

    _clock: Callable[[], float]

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _enqueue(
        self, conn: sqlite3.Connection, event_id: str, kind: str, body: str, subject: str | None
    ) -> bool:
        cursor = conn.execute(_INSERT_OUTBOX, (event_id, kind, subject, body, self._clock()))
        if cursor.rowcount == 0:
            logger.warning("outbox already holds event %s; not queued again", event_id)
            return False
        return True

    # ------------------------------------------------------------------ disk health

    def probe_write(self) -> None:
        """One small real write (a row of ``meta``): does the disk take writes again after
        it refused one (``edge.storage_faults``)? Raises what SQLite raises."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('storage_probe', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (int(self._clock()),)
            )

    # ------------------------------------------------------------------ idempotence

    def mark_processed(self, event_id: str, kind: str, ts: float) -> bool:
        """Mark an event handled in its own transaction; False if it already was."""
        require_text(event_id, "bad_event_id", "event_id")
        with self._write() as conn:
            return conn.execute(_MARK, (event_id, kind, ts)).rowcount == 1

    def purge_processed(self, before_ts: float) -> int:
        """Forget event ids older than any redelivery can be (housekeeping)."""
        with self._write() as conn:
            return conn.execute("DELETE FROM processed_events WHERE ts < ?", (before_ts,)).rowcount

    # ------------------------------------------------------------------ events

    def apply_pos_basket(
        self,
        event_id: str,
        *,
        basket_id: str,
        subject: str | None,
        ts: float,
        lines: Sequence[tuple[str, float, float | None]],
        payload: dict[str, Any],
    ) -> bool:
        """A till basket, in ONE transaction: mark, purchase lines, aggregates, stock, outbox.

        Returns False (and changes nothing) when the event was already applied. A line's unit
        price defaults to the catalog price; its category always comes from the catalog.
        """
        require_text(event_id, "bad_event_id", "event_id")
        require_text(basket_id, "bad_basket", "basket_id")
        if subject is not None:
            require_text(subject, "bad_basket", "subject")
        require_number(ts, "bad_basket", "ts")
        if not lines:
            raise StoreInputError("bad_basket", "a basket needs at least one line")
        for line in lines:
            if not isinstance(line, tuple | list) or len(line) != 3:
                raise StoreInputError("bad_basket", "a line is (product_id, quantity, unit_price)")
            require_text(line[0], "bad_basket", "product_id")
            require_number(line[1], "bad_basket", "quantity")
            if line[2] is not None:
                require_number(line[2], "bad_basket", "unit_price", minimum=0)
        body = dump_json(payload)
        with self._write() as conn:
            if conn.execute(_MARK, (event_id, "pos_basket", self._clock())).rowcount == 0:
                return False
            rows = []
            spend = 0.0
            for product_id, quantity, unit_price in lines:
                known = conn.execute(
                    "SELECT category, price FROM catalog WHERE product_id = ?", (product_id,)
                ).fetchone()
                category = known[0] if known else None
                price = unit_price if unit_price is not None else (known[1] if known else None)
                rows.append((subject, basket_id, ts, product_id, quantity, price, category))
                spend += quantity * (price or 0.0)
                delta = stock_delta(quantity)
                if known is not None and delta:
                    conn.execute(
                        "UPDATE catalog SET stock = MAX(0, stock - ?) WHERE product_id = ?",
                        (delta, product_id),
                    )
            conn.executemany(INSERT_PURCHASE, rows)
            if subject is not None:
                conn.execute(
                    "INSERT INTO aggregates(subject, baskets, total_spend, last_purchase_ts, "
                    "updated_at) VALUES (?, 1, ?, ?, ?) ON CONFLICT(subject) DO UPDATE SET "
                    "baskets = baskets + 1, total_spend = total_spend + excluded.total_spend, "
                    "last_purchase_ts = MAX(COALESCE(last_purchase_ts, excluded.last_purchase_ts),"
                    " excluded.last_purchase_ts), updated_at = excluded.updated_at",
                    (subject, spend, ts, ts),
                )
            self._enqueue(conn, event_id, "pos_basket", body, subject)
        return True

    def record_feedback(
        self,
        event_id: str,
        *,
        subject: str,
        visit_id: str | None,
        product_id: str,
        action: str,
        channel: str,
        ts: float,
        payload: dict[str, Any],
    ) -> bool:
        """Staff/app feedback + its outbox row in one transaction; False if already recorded."""
        require_text(event_id, "bad_event_id", "event_id")
        require_text(subject, "bad_feedback", "subject")
        require_text(product_id, "bad_feedback", "product_id")
        require_text(action, "bad_feedback", "action")
        require_channel(channel)
        require_number(ts, "bad_feedback", "ts")
        body = dump_json(payload)
        with self._write() as conn:
            if conn.execute(_MARK, (event_id, "feedback", self._clock())).rowcount == 0:
                return False
            conn.execute(
                "INSERT INTO feedback(event_id, subject, visit_id, product_id, action, channel, "
                "ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (event_id, subject, visit_id, product_id, action, channel, ts),
            )
            self._enqueue(conn, event_id, "feedback", body, subject)
        return True

    def log_impressions(
        self,
        event_id: str,
        *,
        visit_id: str,
        subject: str | None,
        channel: str,
        ts: float,
        items: Sequence[ImpressionItem],
    ) -> None:
        """What was shown (product_id, rank, score, relevance, reasons) + one outbox
        "recommendation" event. A repeated ``event_id`` logs nothing the second time."""
        self.write_behind([ImpressionLog(event_id, visit_id, subject, channel, ts, items)], ())

    def save_visit(
        self,
        visit_id: str,
        subject: str | None,
        started_at: float,
        ended_at: float | None,
        zone: str | None,
        confidence: float,
        checked_in: bool,
    ) -> None:
        self.write_behind(
            (), [VisitRecord(visit_id, subject, started_at, ended_at, zone, confidence, checked_in)]
        )

    def write_behind(
        self, impressions: Sequence[ImpressionLog], visits: Sequence[VisitRecord]
    ) -> None:
        """Impression logs and visit rows in ONE transaction (the worker's group commit of
        what it deferred past publishing a card; see ``EdgeService.flush``). Everything is
        validated before the transaction starts, so bad input writes nothing."""
        encoded = [(log, log.encode()) for log in impressions]
        visit_params = [v.params() for v in visits]
        if not encoded and not visit_params:
            return
        with self._write() as conn:
            stamp = self._clock()
            for log, (body, rows) in encoded:
                queued = conn.execute(
                    _INSERT_OUTBOX, (log.event_id, "recommendation", log.subject, body, stamp)
                )
                if queued.rowcount:  # else already logged
                    conn.executemany(_INSERT_IMPRESSION, rows)
            conn.executemany(_UPSERT_VISIT, visit_params)

    # ------------------------------------------------------------------ tokens

    def remember_token(self, token_id: str, expires_at: float) -> bool:
        """Record a check-in token id; False if it was seen before (a replay)."""
        require_text(token_id, "bad_token", "token_id")
        with self._write() as conn:
            return conn.execute(_REMEMBER_TOKEN, (token_id, expires_at)).rowcount == 1

    def accept_checkin(
        self, event_id: str, token_id: str, expires_at: float, ts: float,
        visit: VisitRecord | None = None,
    ) -> bool:
        """A verified check-in, in one transaction: its event id (idempotence), its token
        id (replay protection across restarts) and the visit it checked in to (so a
        restart finds the visit its redelivered duplicate no longer writes). False, and
        nothing written, if the event was handled."""
        require_text(event_id, "bad_event_id", "event_id")
        require_text(token_id, "bad_token", "token_id")
        visit_params = visit.params() if visit is not None else None
        with self._write() as conn:
            if conn.execute(_MARK, (event_id, "checkin", ts)).rowcount != 1:
                return False
            conn.execute(_REMEMBER_TOKEN, (token_id, expires_at))
            if visit_params is not None:
                conn.execute(_UPSERT_VISIT, visit_params)
            return True

    def purge_tokens(self, now: float) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM seen_tokens WHERE expires_at <= ?", (now,)).rowcount

    # ------------------------------------------------------------------ outbox

    def enqueue_outbox(
        self, event_id: str, kind: str, payload: dict[str, Any], *, subject: str | None = None
    ) -> bool:
        """Queue an event for the hub; False if ``event_id`` is already queued."""
        require_text(event_id, "bad_event_id", "event_id")
        require_text(kind, "bad_outbox", "kind")
        body = dump_json(payload)
        with self._write() as conn:
            return self._enqueue(conn, event_id, kind, body, subject)

    def outbox_ack(self, seqs: Sequence[int]) -> int:
        """Drop events the hub confirmed; returns how many were still queued."""
        removed = 0
        with self._write() as conn:
            for start in range(0, len(seqs), 500):
                chunk = [int(s) for s in seqs[start:start + 500]]
                marks = ",".join("?" * len(chunk))
                removed += conn.execute(
                    f"DELETE FROM outbox WHERE seq IN ({marks})", chunk
                ).rowcount
        return removed
