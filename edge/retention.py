"""Retention at the edge: what a sweep forgets, and when (pure; the I/O is edge.retention_sweep).

A store device keeps personal data only while it serves the store (docs/privacy.md). Two
rules, both measured on the edge's clock:

* **Members** not seen for ``member_days`` (default 90, the hub's visit relevance window)
  are forgotten: every row the erasure path deletes about them (``edge.store.MEMBER_TABLES``,
  one list for both) except queued outbox events, which the hub must still receive.
  "Seen" is the latest of: a profile or aggregates update from the hub's feed (the hub
  still found the member relevant and sent a change), a purchase line, a visit (check-in,
  geofence, beacons: its last sighting), an impression or a feedback about them. A member
  the hub still considers relevant comes back with the next feed change, or at once when
  their app approaches the store (the edge announces a member it does not hold; the hub
  then sends the profile again). Subjects that only appear in a segment offer's target list
  (``offer_subjects``, no time of its own) are left to the offers feed.
* **Events** older than ``event_days`` (default 30) are deleted once the hub acknowledged
  them: ``processed_events`` marks, ``impressions`` and ``feedback`` rows whose event id has
  no row left in the outbox (the push thread deletes an outbox row only after the hub
  answered for it). The sweep never deletes an outbox row. Ended visits older than
  ``member_days`` go too (they are the "seen" evidence, so they live as long as it counts).

Every delete runs in short ``BEGIN IMMEDIATE`` batches, so the event worker waits for at
most one batch (a few ms), never for a whole sweep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from models.sqlite_schema import Migration
from models.sweep_report import BatchTally

DAY = 86_400.0
T = TypeVar("T")

# Edge migration 10: the time indexes the event rules walk (impressions and feedback only had
# (subject, ts) indexes, visits none on ended_at), so a batch is an index range, not a scan.
RETENTION_INDEXES = Migration(
    10,
    "retention: time indexes of impressions, feedback and ended visits",
    (
        "CREATE INDEX impressions_ts ON impressions(ts)",
        "CREATE INDEX feedback_ts ON feedback(ts)",
        "CREATE INDEX visits_ended ON visits(ended_at) WHERE ended_at IS NOT NULL",
    ),
)

# (table, time expression) of every row that shows a member was around. Each table has a
# ``subject`` index, so the per-batch re-check inside the write transaction is index lookups.
SEEN: tuple[tuple[str, str], ...] = (
    ("profiles", "updated_at"),
    ("aggregates", "updated_at"),
    ("purchases", "ts"),
    ("visits", "COALESCE(last_seen_at, ended_at, started_at)"),
    ("impressions", "ts"),
    ("feedback", "ts"),
)


@dataclass(frozen=True, slots=True)
class AgeRule:
    """Rows of ``table`` whose ``ts`` is before the rule's cutoff are deleted, by ``key``;
    ``acked_only``: and only when no outbox row holds their ``event_id`` any more."""

    table: str
    key: str
    ts: str
    acked_only: bool
    cutoff: str  # "event" (event_days) or "member" (member_days)


AGE_RULES: tuple[AgeRule, ...] = (
    AgeRule("processed_events", "event_id", "ts", True, "event"),
    AgeRule("impressions", "id", "ts", True, "event"),
    AgeRule("feedback", "event_id", "ts", True, "event"),
    AgeRule("visits", "visit_id", "ended_at", False, "member"),
)


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows older than these (epoch seconds) are due."""

    member: float
    event: float

    def of(self, rule: AgeRule) -> float:
        return self.member if rule.cutoff == "member" else self.event


def cutoffs(now: float, member_days: float, event_days: float) -> Cutoffs:
    if member_days <= 0 or event_days <= 0:
        raise ValueError("retention periods must be > 0 days")
    return Cutoffs(now - member_days * DAY, now - event_days * DAY)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    if size < 1:
        raise ValueError("size must be >= 1")
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _not_queued(rule: AgeRule) -> str:
    return (f" AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = {rule.table}.event_id)"
            if rule.acked_only else "")


def due_rows_sql(rule: AgeRule) -> str:
    """Read (outside the write lock): the next ``?`` keys due, after the ``(ts, key)``
    position ``(?, ?)``, oldest first along the time index. Parameters: cutoff, ts, key,
    limit. Moving the position means a row kept (not acknowledged yet) is read once per
    sweep, not once per batch."""
    t = rule.table
    return (f"SELECT {rule.key}, {rule.ts} FROM {t} WHERE {rule.ts} < ? "
            f"AND ({rule.ts}, {rule.key}) > (?, ?){_not_queued(rule)} "
            f"ORDER BY {rule.ts}, {rule.key} LIMIT ?")


def delete_rows_sql(rule: AgeRule) -> str:
    """Write (one batch): delete one key if it is still due. Parameters: key, cutoff."""
    return (f"DELETE FROM {rule.table} WHERE {rule.key} = ? AND {rule.ts} < ?"
            f"{_not_queued(rule)}")


def last_seen_sql(subjects_param: bool) -> str:
    """Latest sighting per subject (``SEEN``) with ``HAVING last < ?``; with
    ``subjects_param`` restricted to the JSON array given first (the in-transaction
    re-check of one batch), else over every subject (the planning read)."""
    head = "WITH batch(s) AS (SELECT value FROM json_each(?)) " if subjects_param else ""
    where = " AND subject IN batch" if subjects_param else ""
    parts = " UNION ALL ".join(
        f"SELECT subject, {expr} AS t FROM {table} WHERE subject IS NOT NULL{where}"
        for table, expr in SEEN
    )
    return (f"{head}SELECT subject, MAX(t) AS last FROM ({parts}) GROUP BY subject "
            "HAVING last < ?")


@dataclass
class SweepReport(BatchTally):
    """What one edge sweep did (``BatchTally``) and how many members it forgot."""

    members: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"members_forgotten": self.members, **self.tally()}
