"""Members at the hub: CRM import, consent with full history, and store relevance.

Every change that a store may care about ends in ``refresh_relevance``: it recomputes, for
each store the member is or was relevant to, the state that store must hold (upsert, or delete
with a reason) and gives the member's rows a new change sequence number, so the change shows
up in those stores' profile feeds on their next poll (cross-store freshness).

Consent: the current value per purpose lives on the member row (what tokens and feeds read),
every change is appended to ``consent_events`` (purpose, granted, channel, when) and is
never rewritten, so the export shows the whole history. A CRM import never re-grants a
purpose the member revoked through another channel (app, store, hub admin): the export may
be older than that revocation, and a stale file must not undo a customer's "no".
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hub.members_csv import MemberRecord
from hub.relevance import feed_state, relevant_until
from hub.settings import RelevanceSettings
from hub.storage import HubDB
from hub.tokens import SCOPES
from models.identity import pseudonymous_id

logger = logging.getLogger(__name__)

CHANNELS = ("crm_import", "app", "store", "hub_admin")
IMPORT_CHUNK = 1000


class MemberErased(ValueError):
    """The subject was erased; its data may not come back."""


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    errors: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "updated": self.updated, "errors": self.errors or []}


# ---------------------------------------------------------------------- reads


def member_consent(db: HubDB, subject: str) -> dict[str, bool] | None:
    """The member's current consent per purpose, or None for an unknown subject."""
    with db.read() as conn:
        row = conn.execute("SELECT consent FROM members WHERE subject = ?", (subject,)).fetchone()
    if row is None:
        return None
    stored = json.loads(row[0])
    return {p: stored.get(p) is True for p in SCOPES}


def consent_history(conn: sqlite3.Connection, subject: str) -> list[dict[str, Any]]:
    return [
        {"purpose": r[0], "granted": bool(r[1]), "channel": r[2], "at": r[3]}
        for r in conn.execute(
            "SELECT purpose, granted, channel, at FROM consent_events WHERE subject = ? "
            "ORDER BY id", (subject,)
        )
    ]


def erased_subjects(conn: sqlite3.Connection, subjects: Iterable[str]) -> set[str]:
    wanted = sorted(set(subjects))
    if not wanted:
        return set()
    return {
        r[0] for r in conn.execute(
            "SELECT subject FROM erasures WHERE subject IN (SELECT value FROM json_each(?))",
            (json.dumps(wanted),),
        )
    }


# ---------------------------------------------------------------------- relevance


def _by_subject(conn: sqlite3.Connection, sql: str, subjects: str) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {}
    for row in conn.execute(sql, (subjects,)):
        rows.setdefault(row[0], []).append(row[1:])
    return rows


def refresh_relevance(
    db: HubDB, conn: sqlite3.Connection, subjects: Iterable[str], cfg: RelevanceSettings,
    *, data_changed: bool = True,
) -> None:
    """Recompute every store feed row of ``subjects`` inside the caller's write transaction.

    Upsert rows get a new sequence number when the member's data changed (``data_changed``;
    not for a mere visit or approach, which only matters to the stores it makes the member
    relevant to); any row gets one when its state changes. One number per member: unique
    within each store's feed. Three queries for the whole set (an ingestion batch touches
    hundreds of members).
    """
    wanted = json.dumps(sorted(set(subjects)))
    now = db.clock()
    in_set = "WHERE subject IN (SELECT value FROM json_each(?))"
    members = _by_subject(conn, f"SELECT subject, home_store, consent FROM members {in_set}",
                          wanted)
    presence = _by_subject(
        conn, f"SELECT subject, store, last_visit_ts, announced_at FROM presence {in_set}", wanted
    )
    previous = _by_subject(
        conn, f"SELECT subject, store, op, reason FROM store_members {in_set}", wanted
    )
    pending: list[list[tuple[Any, ...]]] = []
    for subject in json.loads(wanted):
        member = members.get(subject, [None])[0]
        personalize = member is not None and json.loads(member[1]).get("personalize") is True
        home = member[0] if member else None
        seen = {store: (visit, announced) for store, visit, announced in presence.get(subject, ())}
        before = {store: (op, reason) for store, op, reason in previous.get(subject, ())}
        stores = set(seen) | set(before) | ({home} if home else set())
        rows = []
        for store in sorted(stores):
            visit, announced = seen.get(store, (None, None))
            until = relevant_until(home=store == home, last_visit_ts=visit,
                                   announced_at=announced, cfg=cfg)
            state = feed_state(until=until, now=now, member_exists=member is not None,
                               personalize=personalize, previous=before.get(store))
            if state is None:
                continue
            if (state[0] == "delete" or not data_changed) and state == before.get(store):
                continue
            rows.append((store, subject, max(until, -1.0), state[0], state[1]))
        if rows:
            pending.append(rows)
    if not pending:
        return
    first = db.next_seq(conn, len(pending))
    conn.executemany(
        "INSERT OR REPLACE INTO store_members(store, subject, relevant_until, op, reason, seq) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(*row, first + i) for i, rows in enumerate(pending) for row in rows],
    )


def expire_relevance(db: HubDB, store: str) -> int:
    """Turn the store's rows whose relevance ran out into ``delete / not_relevant`` (run
    before serving a feed page; a read first, so an idle poll does not write)."""
    now = db.clock()
    query = ("SELECT subject FROM store_members WHERE store = ? AND op = 'upsert' "
             "AND relevant_until <= ?")
    with db.read() as conn:
        if conn.execute(query + " LIMIT 1", (store, now)).fetchone() is None:
            return 0
    with db.write() as conn:
        subjects = [r[0] for r in conn.execute(query, (store, now))]
        if subjects:
            first = db.next_seq(conn, len(subjects))
            conn.executemany(
                "UPDATE store_members SET op = 'delete', reason = 'not_relevant', seq = ? "
                "WHERE store = ? AND subject = ?",
                [(first + i, store, s) for i, s in enumerate(subjects)],
            )
    return len(subjects)


def mark_presence(
    db: HubDB, conn: sqlite3.Connection, visits: Mapping[tuple[str, str], float],
    announced: Mapping[tuple[str, str], float] | None = None,
) -> None:
    """Record visits ``{(subject, store): ts}`` / announcements in the caller's transaction."""
    conn.executemany(
        "INSERT INTO presence(subject, store, last_visit_ts) VALUES (?, ?, ?) "
        "ON CONFLICT(subject, store) DO UPDATE SET last_visit_ts = "
        "MAX(COALESCE(last_visit_ts, excluded.last_visit_ts), excluded.last_visit_ts)",
        [(s, store, ts) for (s, store), ts in visits.items()],
    )
    conn.executemany(
        "INSERT INTO presence(subject, store, announced_at) VALUES (?, ?, ?) "
        "ON CONFLICT(subject, store) DO UPDATE SET announced_at = "
        "MAX(COALESCE(announced_at, excluded.announced_at), excluded.announced_at)",
        [(s, store, ts) for (s, store), ts in (announced or {}).items()],
    )


def announce(db: HubDB, store: str, subject: str, cfg: RelevanceSettings) -> str:
    """A geofence approach: the member enters the store's feed. Returns the outcome."""
    with db.write() as conn:
        if erased_subjects(conn, [subject]):
            return "erased"
        if conn.execute("SELECT 1 FROM members WHERE subject = ?", (subject,)).fetchone() is None:
            return "unknown_member"
        mark_presence(db, conn, {}, {(subject, store): db.clock()})
        refresh_relevance(db, conn, [subject], cfg, data_changed=False)
        # An edge announces only a member it does not hold (never synced, or forgotten by
        # its retention sweep while the hub still counts it relevant): its row is sent again.
        conn.execute("UPDATE store_members SET seq = ? WHERE store = ? AND subject = ? "
                     "AND op = 'upsert'", (db.next_seq(conn), store, subject))
    return "accepted"


# ---------------------------------------------------------------------- consent


def _record_consent(
    conn: sqlite3.Connection, subject: str, changes: Mapping[str, bool], channel: str, at: float
) -> None:
    conn.executemany(
        "INSERT INTO consent_events(subject, purpose, granted, channel, at) VALUES (?, ?, ?, ?, ?)",
        [(subject, p, int(v), channel, at) for p, v in changes.items()],
    )


def _revoked_elsewhere(conn: sqlite3.Connection, subject: str) -> set[str]:
    """Purposes whose latest change was a revocation through a channel other than the CRM."""
    rows = conn.execute(
        "SELECT purpose, granted, channel FROM consent_events WHERE id IN ("
        "SELECT MAX(id) FROM consent_events WHERE subject = ? GROUP BY purpose)", (subject,)
    )
    return {p for p, granted, channel in rows if not granted and channel != "crm_import"}


def set_consent(
    db: HubDB, subject: str, wanted: Mapping[str, bool], channel: str, cfg: RelevanceSettings
) -> dict[str, bool] | None:
    """Change some purposes; only real changes enter the history. None: unknown member."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    unknown = set(wanted) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown purpose(s) {sorted(unknown)}")
    now = db.clock()
    with db.write() as conn:
        row = conn.execute("SELECT consent FROM members WHERE subject = ?", (subject,)).fetchone()
        if row is None:
            return None
        current = {p: json.loads(row[0]).get(p) is True for p in SCOPES}
        changes = {p: bool(v) for p, v in wanted.items() if current[p] != bool(v)}
        if changes:
            current.update(changes)
            conn.execute(
                "UPDATE members SET consent = ?, updated_at = ? WHERE subject = ?",
                (json.dumps(current), now, subject),
            )
            _record_consent(conn, subject, changes, channel, now)
            refresh_relevance(db, conn, [subject], cfg)
            logger.info("consent of %s changed via %s: %s", subject, channel, changes)
    return current


# ---------------------------------------------------------------------- CRM import


def _upsert_member(
    db: HubDB, conn: sqlite3.Connection, subject: str, rec: MemberRecord, now: float
) -> bool:
    """One record; returns True when the member is new."""
    row = conn.execute("SELECT consent FROM members WHERE subject = ?", (subject,)).fetchone()
    current = {p: json.loads(row[0]).get(p) is True for p in SCOPES} if row else {}
    blocked = _revoked_elsewhere(conn, subject) if row else set()
    consent = {p: (v and p not in blocked) for p, v in rec.consent.items()}
    changes = {p: v for p, v in consent.items() if row is None or current.get(p) != v}
    conn.execute(
        "INSERT INTO members(subject, first_name, last_name, email, birthday, tier, home_store, "
        "preferences, consent, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(subject) DO UPDATE SET first_name = excluded.first_name, "
        "last_name = excluded.last_name, email = excluded.email, birthday = excluded.birthday, "
        "tier = excluded.tier, home_store = excluded.home_store, "
        "preferences = excluded.preferences, consent = excluded.consent, "
        "updated_at = excluded.updated_at",
        (subject, rec.first_name, rec.last_name, rec.email, rec.birthday, rec.tier,
         rec.home_store, json.dumps(rec.preferences), json.dumps(consent), now, now),
    )
    if changes:
        _record_consent(conn, subject, changes, "crm_import", now)
    return row is None


def import_members(
    db: HubDB, records: Sequence[MemberRecord], salt: str, cfg: RelevanceSettings
) -> ImportReport:
    """Upsert members from CRM records, in transactions of ``IMPORT_CHUNK`` rows. Erased
    members are not brought back (reported as ``erased`` with their line)."""
    report = ImportReport(errors=[])
    assert report.errors is not None
    for start in range(0, len(records), IMPORT_CHUNK):
        chunk = records[start:start + IMPORT_CHUNK]
        subjects = [pseudonymous_id(rec.loyalty_number, salt) for rec in chunk]
        now = db.clock()
        with db.write() as conn:
            erased = erased_subjects(conn, subjects)
            touched = []
            for subject, rec in zip(subjects, chunk, strict=True):
                if subject in erased:
                    report.errors.append({"line": rec.line, "reason": "erased",
                                          "detail": "member was erased; not re-imported"})
                    continue
                if _upsert_member(db, conn, subject, rec, now):
                    report.created += 1
                else:
                    report.updated += 1
                touched.append(subject)
            refresh_relevance(db, conn, dict.fromkeys(touched), cfg)
    logger.info("CRM import: %d created, %d updated, %d refused",
                report.created, report.updated, len(report.errors))
    return report
