"""Retention at the hub: what a sweep deletes, and when (pure; the I/O is hub.retention_sweep).

The hub is the chain's long memory, but not an unbounded one (docs/privacy.md, "Hub"). Three
age rules, all measured on the hub's clock:

* **events** (the raw event history stores pushed) older than ``events_days`` (default 730)
  by ``received_at``, the hub's own time of receipt, not the till's or phone's ``created_at``:
  the event id is what makes a re-sent batch a duplicate, so it must live as long after
  *arrival* as any retry could come, whatever clock the event carries (a far-future
  ``created_at`` would otherwise never age out, a far-past one would lose its id at once);
* **purchases** (basket lines: training history, the profile feed's history) whose basket
  time ``ts`` is older than ``purchases_days`` (default 730). The member's ``aggregates``
  are recomputed from the lines left (a member with none left has no aggregates row): a
  summary must not keep what the lines it summarises no longer show. Members whose
  aggregates changed get a new feed sequence (``hub.members.refresh_relevance``), so the
  stores holding them receive the smaller history;
* **presence** (where a member was seen: ``last_visit_ts`` / ``announced_at``) older than
  ``presence_days`` (default 180), but never younger than the relevance windows
  (``relevance.visit_window_days`` / ``announce_window_h``): a swept presence row is one
  that no longer makes the member relevant to that store (``hub.relevance.relevant_until``
  ≤ now), so deleting it changes no feed state; the store's expired upserts are turned into
  ``not_relevant`` deletes by the existing ``hub.members.expire_relevance`` right after,
  exactly as the next feed poll would have done.

Kept on purpose: the consent history (``consent_events``) and the erasure records
(``erasures``, ``erasure_acks``) are legal proof of what a member allowed and that an erasure
was carried out; ``members`` (the CRM record) stays until erasure or a CRM change;
``store_members`` tombstones stay, since they are what tells a store that was offline to
delete a profile, and a tombstone has no time of its own to age by.

Every delete is one statement in one short ``BEGIN IMMEDIATE`` transaction that selects at
most ``batch_rows`` due rows along a time index (hub migration 31) and deletes them, so an
ingesting store waits for one batch at most, never for a whole sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from models.sqlite_schema import Migration
from models.sweep_report import BatchTally

DAY = 86_400.0
HOUR = 3_600.0

# When a presence row was last useful: the later of its two times (either may be NULL).
PRESENCE_SEEN = ("MAX(COALESCE(last_visit_ts, announced_at), "
                 "COALESCE(announced_at, last_visit_ts))")

# Hub migration 31: the time indexes the rules walk (a batch is an index range, not a scan).
RETENTION_INDEXES = Migration(
    31,
    "retention: time indexes of events (received), purchases and presence",
    (
        "CREATE INDEX events_received ON events(received_at)",
        "CREATE INDEX purchases_ts ON purchases(ts)",
        f"CREATE INDEX presence_seen ON presence({PRESENCE_SEEN})",
    ),
)


class Settings(Protocol):
    """``hub.settings.HubRetentionSettings``."""

    @property
    def events_days(self) -> float: ...

    @property
    def purchases_days(self) -> float: ...

    @property
    def presence_days(self) -> float: ...


class Windows(Protocol):
    """``hub.settings.RelevanceSettings`` (as ``hub.relevance.Windows``)."""

    @property
    def visit_window_days(self) -> float: ...

    @property
    def announce_window_h(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Rule:
    """Rows of ``table`` whose ``ts`` (an indexed expression) is before the cutoff of
    ``cutoff`` are deleted by ``key``; ``returning``: the column the batch reports back
    (the subjects whose aggregates to recompute, the stores whose feed to expire)."""

    table: str
    key: tuple[str, ...]  # the primary key's columns
    ts: str
    cutoff: str  # "events", "purchases", "presence"
    returning: str | None = None


RULES: tuple[Rule, ...] = (
    Rule("events", ("rowid",), "received_at", "events"),
    Rule("purchases", ("id",), "ts", "purchases", returning="subject"),
    Rule("presence", ("subject", "store"), PRESENCE_SEEN, "presence", returning="store"),
)
KEPT = ("members", "consent_events", "erasures", "erasure_acks", "store_members")


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows older than these (epoch seconds) are due; ``presence_clamped``: the setting was
    shorter than a relevance window and the window was used instead."""

    events: float
    purchases: float
    presence: float
    presence_clamped: bool = False

    def of(self, rule: Rule) -> float:
        return float(getattr(self, rule.cutoff))


def cutoffs(now: float, settings: Settings, windows: Windows) -> Cutoffs:
    """The cutoffs of one sweep at ``now``. Presence never goes before the relevance windows
    ran out: ``max(presence_days, visit_window_days, announce_window_h / 24)``."""
    periods = (settings.events_days, settings.purchases_days, settings.presence_days)
    if min(periods) <= 0:
        raise ValueError("retention periods must be > 0 days")
    floor = max(windows.visit_window_days, windows.announce_window_h * HOUR / DAY)
    presence_days = max(settings.presence_days, floor)
    clamped = presence_days > settings.presence_days
    return Cutoffs(now - settings.events_days * DAY, now - settings.purchases_days * DAY,
                   now - presence_days * DAY, presence_clamped=clamped)


def delete_batch_sql(rule: Rule) -> str:
    """One batch: delete up to ``?`` rows due before ``?``, oldest first along the rule's
    index. Parameters: cutoff, limit. Returns ``rule.returning`` per row if set."""
    returning = f" RETURNING {rule.returning}" if rule.returning else ""
    columns = ", ".join(rule.key)
    key = columns if len(rule.key) == 1 else f"({columns})"
    return (f"DELETE FROM {rule.table} WHERE {key} IN (SELECT {columns} FROM {rule.table} "
            f"WHERE {rule.ts} < ? ORDER BY {rule.ts} LIMIT ?){returning}")


def due_count_sql(rule: Rule) -> str:
    """How many rows are due (``sweep --dry-run``). Parameter: cutoff."""
    return f"SELECT COUNT(*) FROM {rule.table} WHERE {rule.ts} < ?"


# Aggregates of the given subjects (a JSON array) recomputed from their purchase lines, as
# ingestion adds them up (hub.ingest: one basket per pos_basket event, spend = quantity x
# unit price); a subject with no line left loses its row. Parameters: subjects, now / subjects.
RECOMPUTE_AGGREGATES_SQL = (
    "UPDATE aggregates SET (baskets, total_spend, last_purchase_ts, updated_at) = ("
    "SELECT COUNT(DISTINCT p.event_id), COALESCE(SUM(p.quantity * COALESCE(p.unit_price, 0)), 0),"
    " MAX(p.ts), ? FROM purchases p WHERE p.subject = aggregates.subject) "
    "WHERE subject IN (SELECT value FROM json_each(?)) "
    "AND EXISTS (SELECT 1 FROM purchases p WHERE p.subject = aggregates.subject)"
)
DROP_EMPTY_AGGREGATES_SQL = (
    "DELETE FROM aggregates WHERE subject IN (SELECT value FROM json_each(?)) "
    "AND NOT EXISTS (SELECT 1 FROM purchases p WHERE p.subject = aggregates.subject)"
)


@dataclass
class SweepReport(BatchTally):
    """What one hub sweep did (``BatchTally``), members whose aggregates were recomputed and
    feed rows expired."""

    members_recomputed: int = 0
    expired_feed_rows: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"members_recomputed": self.members_recomputed,
                "expired_feed_rows": self.expired_feed_rows, **self.tally()}
