"""Read-only access to the edge store, one connection per thread.

WAL lets readers run beside the single writer without blocking it or being blocked, but an
sqlite3 connection must not be shared between threads mid-statement, hence one ``EdgeReader``
per thread (HTTP threads, the worker's own lookups). Every query here is the hot path of a
check-in or an HTTP request, so it is plain ``sqlite3`` with an index behind each WHERE clause
(tests check the query plans). Each SELECT runs in autocommit mode, i.e. sees everything
committed before it started; multi-query reads (caps) take one snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge.offers import OfferBook, book_from_rows
from edge.store_rows import (
    DISMISSED,
    Aggregates,
    CapCounts,
    CatalogItem,
    Impression,
    Offer,
    OutboxEvent,
    Profile,
    VisitRecord,
)
from models.sqlite_db import connect_readonly
from models.transactions import Transaction

PROFILE_SQL = (
    "SELECT subject, first_name, tier, birthday, preferences, consent, home_store "
    "FROM profiles WHERE subject = ?"
)
HISTORY_SQL = (
    "SELECT basket_id, ts, product_id, quantity, unit_price, category FROM purchases "
    "WHERE subject = ? ORDER BY ts DESC, id DESC"
)
# Everything the caps need in ONE statement (one snapshot, one round trip on the check-in
# path): tag 0 = an impression of the visit, 1 = a staff dismiss in the visit, 2 = today's
# impressions and app-offer events of the subject, 3 = today's staff dismisses.
CAPS_SQL = (
    "SELECT 0, product_id, channel, event_id FROM impressions WHERE visit_id = :visit "
    "UNION ALL SELECT 1, product_id, NULL, NULL FROM feedback "
    "WHERE visit_id = :visit AND channel = 'staff' AND action = :dismissed "
    "UNION ALL SELECT 2, COUNT(*), COUNT(DISTINCT CASE WHEN channel = 'app' THEN event_id END), "
    "NULL FROM impressions WHERE subject = :subject AND ts >= :since "
    "UNION ALL SELECT 3, COUNT(*), NULL, NULL FROM feedback WHERE subject = :subject "
    "AND ts >= :since AND channel = 'staff' AND action = :dismissed"
)
# The other variants of the dismissed products' styles (a dismiss hides the style).
STYLE_SIBLINGS_SQL = (
    "SELECT product_id FROM catalog WHERE style_id IN (SELECT style_id FROM catalog "
    "WHERE product_id IN (SELECT value FROM json_each(?)))"
)
ANONYMOUS_PREFIX = "anon:"


class EdgeReader:
    """Queries of one thread; obtain through ``EdgeStore.reader()``."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self._conn = connect_readonly(path, busy_timeout_ms)

    def close(self) -> None:
        self._conn.close()

    # ------------------------------------------------------------------ customers

    def get_profile(self, subject: str) -> Profile | None:
        row = self._conn.execute(PROFILE_SQL, (subject,)).fetchone()
        if row is None:
            return None
        return Profile(
            row[0], row[1], row[2], row[3], json.loads(row[4]), json.loads(row[5]), row[6]
        )

    def get_aggregates(self, subject: str) -> Aggregates | None:
        row = self._conn.execute(
            "SELECT subject, baskets, total_spend, last_purchase_ts FROM aggregates "
            "WHERE subject = ?",
            (subject,),
        ).fetchone()
        return None if row is None else Aggregates(row[0], row[1], row[2], row[3])

    def purchase_history(self, subject: str, max_baskets: int = 50) -> list[Transaction]:
        """The subject's last ``max_baskets`` baskets, oldest line first."""
        out: list[Transaction] = []
        if max_baskets <= 0:
            return out
        baskets: set[str] = set()
        cursor = self._conn.execute(HISTORY_SQL, (subject,))
        try:
            for basket_id, ts, product_id, quantity, unit_price, category in cursor:
                if basket_id not in baskets:
                    if len(baskets) == max_baskets:
                        break
                    baskets.add(basket_id)
                out.append(
                    Transaction(
                        subject, basket_id, ts, product_id, quantity, unit_price, category, None
                    )
                )
        finally:
            cursor.close()  # ends the read snapshot even when we stop early
        out.reverse()
        return out

    def all_purchases(self, since_ts: float | None = None) -> list[Transaction]:
        """Every purchase line (for item statistics), oldest first.

        Anonymous baskets get ``customer_id = "anon:<basket_id>"``: each is an unknown
        customer of its own, so distinct-customer counts stay honest.
        """
        sql = (
            "SELECT subject, basket_id, ts, product_id, quantity, unit_price, category "
            "FROM purchases"
        )
        params: tuple[float, ...] = ()
        if since_ts is not None:
            sql += " WHERE ts >= ?"
            params = (since_ts,)
        rows = self._conn.execute(sql + " ORDER BY ts, id", params).fetchall()
        return [
            Transaction(
                subject if subject is not None else ANONYMOUS_PREFIX + basket_id,
                basket_id, ts, product_id, quantity, unit_price, category, None,
            )
            for subject, basket_id, ts, product_id, quantity, unit_price, category in rows
        ]

    # ------------------------------------------------------------------ catalog, offers

    def catalog(self) -> list[CatalogItem]:
        rows = self._conn.execute(
            "SELECT product_id, name, category, price, stock, zone, style_id FROM catalog "
            "ORDER BY product_id"
        ).fetchall()
        return [CatalogItem(*row) for row in rows]

    def _meta(self, key: str) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    def catalog_version(self) -> int:
        return self._meta("catalog_version")

    def active_offers(self, now: float) -> list[Offer]:
        rows = self._conn.execute(
            "SELECT offer_id, product_id, category, discount_pct, valid_from, valid_to "
            "FROM offers WHERE valid_from <= ? AND valid_to > ? ORDER BY offer_id",
            (now, now),
        ).fetchall()
        return [Offer(*row) for row in rows]

    def offers_version(self) -> int:
        """Bumped by triggers on every change of offers or their targeting (migration 5)."""
        return self._meta("offers_version")

    def offer_book(self, now: float) -> tuple[int, OfferBook]:
        """Offers not yet over at ``now`` (incl. future ones: the book checks the window on
        every use), with the subjects of segment offers, and the ``offers_version`` they
        are as of; one snapshot."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            version = self._meta("offers_version")
            rows = conn.execute(
                "SELECT offer_id, product_id, category, discount_pct, valid_from, valid_to "
                "FROM offers WHERE valid_to > ?", (now,)
            ).fetchall()
            targeted = [r[0] for r in conn.execute("SELECT offer_id FROM offer_segments")]
            subjects: dict[str, list[str]] = {}
            for offer_id, subject in conn.execute("SELECT offer_id, subject FROM offer_subjects"):
                subjects.setdefault(offer_id, []).append(subject)
        finally:
            conn.execute("COMMIT")
        return version, book_from_rows(rows, subjects, targeted)

    # ------------------------------------------------------------------ visits, caps

    def cap_counts(self, subject: str, visit_id: str, day_start_ts: float) -> CapCounts:
        conn = self._conn
        shown: dict[str, int] = {}
        app_events: set[str] = set()
        dismissed: list[str] = []
        today = app_today = dismissed_today = 0
        params = {"visit": visit_id, "subject": subject, "since": day_start_ts,
                  "dismissed": DISMISSED}
        for tag, a, b, c in conn.execute(CAPS_SQL, params).fetchall():
            if tag == 0:  # (product_id, channel, event_id)
                shown[a] = shown.get(a, 0) + 1
                if b == "app":
                    app_events.add(c)
            elif tag == 1:  # a dismiss counts as shown too
                dismissed.append(a)
                shown[a] = shown.get(a, 0) + 1
            elif tag == 2:
                today, app_today = a, b
            else:
                dismissed_today = a
        hidden = set(dismissed)
        if dismissed:  # no extra query on the common path (nothing dismissed yet)
            hidden.update(r[0] for r in conn.execute(STYLE_SIBLINGS_SQL,
                                                     (json.dumps(dismissed),)))
        return CapCounts(
            shown_in_visit=shown,
            dismissed_in_visit=frozenset(hidden),
            impressions_today=int(today) + int(dismissed_today),
            app_offers_today=int(app_today),
            app_offers_in_visit=len(app_events),
        )

    def visit(self, visit_id: str) -> VisitRecord | None:
        row = self._conn.execute(
            "SELECT visit_id, subject, started_at, ended_at, zone, confidence, checked_in "
            "FROM visits WHERE visit_id = ?",
            (visit_id,),
        ).fetchone()
        if row is None:
            return None
        return VisitRecord(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))

    def visit_impressions(self, visit_id: str) -> list[Impression]:
        """What was recommended in a visit, in the order it was logged."""
        rows = self._conn.execute(
            "SELECT event_id, visit_id, subject, product_id, channel, rank, score, relevance, "
            "reasons, ts FROM impressions WHERE visit_id = ? ORDER BY id",
            (visit_id,),
        ).fetchall()
        return [
            Impression(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9])
            for r in rows
        ]

    # ------------------------------------------------------------------ events, outbox

    def is_processed(self, event_id: str) -> bool:
        return (
            self._conn.execute(
                "SELECT 1 FROM processed_events WHERE event_id = ?", (event_id,)
            ).fetchone()
            is not None
        )

    def live_tokens(self, now: float) -> list[tuple[str, float]]:
        rows = self._conn.execute(
            "SELECT token_id, expires_at FROM seen_tokens WHERE expires_at > ? "
            "ORDER BY expires_at, token_id",
            (now,),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def outbox_pending(self, limit: int = 500) -> list[OutboxEvent]:
        rows = self._conn.execute(
            "SELECT seq, event_id, kind, payload, created_at FROM outbox ORDER BY seq LIMIT ?",
            (limit,),
        ).fetchall()
        return [OutboxEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def outbox_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
