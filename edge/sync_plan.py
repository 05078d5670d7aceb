"""Pure decisions of the edge's hub sync: when to try again, what is due, how to batch,
what a hub answer means, how stale the cache is.

No I/O, no clock and no randomness of its own: callers pass ``now`` and a random draw, so
every rule here is unit-tested deterministically and the threads in ``edge.sync`` only move
bytes. The wire format is the hub ⇄ edge sync contract (docs/architecture.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# Erasures first: an erased member must be gone before anything else is applied.
FEEDS = ("erasures", "profiles", "catalog", "offers")
FEED_PATHS = {
    "erasures": "erasures",
    "profiles": "feed/profiles",
    "catalog": "feed/catalog",
    "offers": "feed/offers",
}
# Outbox kinds whose name on the hub differs (the edge logs what it showed as
# "recommendation"; the hub's events endpoint calls it "impression").
HUB_KIND = {"recommendation": "impression"}
MAX_EVENTS_PER_BATCH = 1000
_CURSOR = re.compile(r"^[0-9]{1,20}$")


class BadResponse(ValueError):
    """A hub answer that does not follow the contract (treated like an unreachable hub)."""


# --------------------------------------------------------------------------- scheduling


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * 2^(failures-1)``, capped at ``max_s``."""

    initial_s: float = 1.0
    max_s: float = 60.0
    jitter: float = 0.2

    def delay(self, failures: int, draw: float) -> float:
        """Seconds to wait after ``failures`` consecutive failures; ``draw`` in [0, 1).

        Up to ``jitter`` of the delay is taken off at random, so the 50 stores that lost the
        hub together do not all come back in the same second.
        """
        if failures <= 0:
            return 0.0
        base = min(self.max_s, self.initial_s * 2.0 ** min(failures - 1, 60))
        return base * (1.0 - self.jitter * min(max(draw, 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class JobState:
    """When a recurring job (a feed, the outbox, the heartbeat) may run next."""

    next_at: float = 0.0
    failures: int = 0

    def succeeded(self, now: float, interval_s: float, more: bool = False) -> JobState:
        """Next run after one interval, or at once while the hub says there is more."""
        return JobState(now if more else now + interval_s, 0)

    def failed(self, now: float, backoff: Backoff, draw: float) -> JobState:
        failures = self.failures + 1
        return JobState(now + backoff.delay(failures, draw), failures)


def due_jobs(jobs: Mapping[str, JobState], link: JobState, now: float) -> list[str]:
    """Jobs to run now, in the mapping's order; none while the link itself backs off."""
    if link.next_at > now:
        return []
    return [name for name, state in jobs.items() if state.next_at <= now]


def seconds_until_due(
    jobs: Mapping[str, JobState], link: JobState, now: float, cap_s: float
) -> float:
    """How long a sync thread may wait before some job is due (at most ``cap_s``)."""
    earliest = min((s.next_at for s in jobs.values()), default=now + cap_s)
    return min(cap_s, max(0.0, max(earliest, link.next_at) - now))


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (order kept)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    return [items[i:i + size] for i in range(0, len(items), size)]


def halves(items: Sequence[T]) -> list[Sequence[T]]:
    """A batch the hub refused as a whole is retried as two halves, down to single events,
    so one malformed event can neither block the outbox nor take good events with it."""
    if len(items) <= 1:
        return [items]
    middle = len(items) // 2
    return [items[:middle], items[middle:]]


# --------------------------------------------------------------------------- outbox


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A queued event as stored: ``payload`` is the stored JSON text (sent as is)."""

    seq: int
    event_id: str
    kind: str
    subject: str | None
    payload: str
    created_at: float


def events_body(rows: Iterable[OutboxRow]) -> bytes:
    """The ``POST /events`` body, built from the stored JSON without re-parsing it."""
    parts = []
    for row in rows:
        head = json.dumps(
            {"event_id": row.event_id, "kind": HUB_KIND.get(row.kind, row.kind),
             "subject": row.subject, "created_at": row.created_at},
            separators=(",", ":"),
        )
        parts.append(f'{head[:-1]},"payload":{row.payload}}}')
    return ('{"events":[' + ",".join(parts) + "]}").encode()


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What the hub answered for one batch: which rows to delete, which to keep."""

    delete: tuple[int, ...]  # outbox seqs the hub answered for (accepted, duplicate, refused)
    keep: tuple[int, ...]  # seqs the hub did not mention: sent again later
    accepted: int
    duplicates: int
    refused: dict[str, str]  # event_id -> reason (permanent: dropped too)


def interpret_events_response(sent: Sequence[OutboxRow], body: Any) -> PushOutcome:
    """Read ``{"accepted", "duplicates", "refused"}``; ids the edge did not send are ignored.

    A duplicate means an earlier attempt reached the hub (its answer was lost): harmless,
    deleted. A refusal is permanent (e.g. the member was erased): deleted as well.
    """
    if not isinstance(body, dict):
        raise BadResponse("events answer is not a JSON object")
    accepted = _id_list(body.get("accepted", []), "accepted")
    duplicates = _id_list(body.get("duplicates", []), "duplicates")
    refused_raw = body.get("refused", [])
    if not isinstance(refused_raw, list):
        raise BadResponse("refused is not a list")
    refused: dict[str, str] = {}
    for entry in refused_raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("event_id"), str):
            raise BadResponse("a refused entry needs an event_id")
        refused[entry["event_id"]] = str(entry.get("reason", "unknown"))
    answered = set(accepted) | set(duplicates) | set(refused)
    by_id = {row.event_id: row.seq for row in sent}
    delete = tuple(seq for event_id, seq in by_id.items() if event_id in answered)
    keep = tuple(seq for event_id, seq in by_id.items() if event_id not in answered)
    return PushOutcome(
        delete=delete,
        keep=keep,
        accepted=len(set(accepted) & by_id.keys()),
        duplicates=len(set(duplicates) & by_id.keys()),
        refused={k: v for k, v in refused.items() if k in by_id},
    )


def _id_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadResponse(f"{name} is not a list of event ids")
    return value


# --------------------------------------------------------------------------- feeds


@dataclass(frozen=True, slots=True)
class FeedPage:
    items: list[dict[str, Any]]
    cursor: str
    more: bool


def parse_page(body: Any, cursor_sent: str) -> FeedPage:
    """``{"items", "cursor", "more"}``; a cursor going backwards is a hub fault, refused."""
    if not isinstance(body, dict):
        raise BadResponse("feed answer is not a JSON object")
    items, cursor, more = body.get("items"), body.get("cursor"), body.get("more", False)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise BadResponse("items is not a list of objects")
    if not isinstance(cursor, str) or not _CURSOR.match(cursor):
        raise BadResponse(f"cursor {cursor!r} is not a decimal string")
    if int(cursor) < int(cursor_sent):
        raise BadResponse(f"cursor went back from {cursor_sent} to {cursor}")
    if not isinstance(more, bool):
        raise BadResponse("more is not a boolean")
    return FeedPage(items, cursor, more and bool(items))


def latest_per_key(items: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Keep only each key's last change of a page (items come in ``seq`` order), so one
    transaction applies the final state: an upsert followed by a delete is a delete."""
    last: dict[Any, dict[str, Any]] = {}
    for item in items:
        last.pop(item.get(key), None)  # re-insert: the dict keeps the last change's order
        last[item.get(key)] = item
    return list(last.values())


# --------------------------------------------------------------------------- staleness


def staleness(
    last_success: Mapping[str, float | None], now: float
) -> dict[str, float | None]:
    """Seconds since each feed was last read to its end; None = never since installation."""
    return {
        feed: None if at is None else round(max(0.0, now - at), 3)
        for feed, at in last_success.items()
    }


def worst_staleness(per_feed: Mapping[str, float | None]) -> float | None:
    """The stalest feed's age (None if some feed never synced: that is the worst)."""
    values = list(per_feed.values())
    if not values or any(v is None for v in values):
        return None
    return max(v for v in values if v is not None)


def is_stale(per_feed: Mapping[str, float | None], stale_after_s: float) -> bool:
    worst = worst_staleness(per_feed)
    return worst is None or worst > stale_after_s
