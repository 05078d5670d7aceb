"""Carrying open visits across an edge restart: what is saved, what comes back, what closes.

Why: the visit tracker and the staff cards live in memory. Without this, a restart (update,
power blip, crash, kill -9) empties the staff tablets, and a customer's next event starts a
NEW visit: a new ``visit_id``, so the per-visit caps and dismissals (read from SQLite by
visit id) start over and the customer is offered again what they dismissed a minute ago.

Saved: a copy of each active visit's ``VisitState`` as JSON in ``visits.resume`` (with
``last_seen_at``), written by the worker's checkpoint tick (``Checkpoints`` says which):
at once when something that decides the visit's future changed (a new visit, check-in and
consent scopes, zone, geofence state), and otherwise only every ``drift_s`` while just
time moved on (``last_seen``, ``zone_heard``, ``zone_rssi``: every beacon moves them, and a
write per beacon is not worth it). So a restored visit may be up to ``drift_s`` older than
it really was: it times out at most that much early.

Restored (``restore_open_visits``), for each ``visits`` row without ``ended_at``:
* no readable state (a row of older software, or the edge died within one tick of the
  visit's start): closed, reason ``restart_no_state`` — consent scopes are never guessed;
* several open rows of one subject: the most recently seen is kept, the others closed,
  reason ``restart_superseded`` (so is every row of a subject the tracker already follows);
* the rest go through ``VisitTracker.restore(now)``: "still plausible" is the tracker's own
  rule, not a second one: a visit is kept if it would still be open had the edge run all
  along — seen within ``visit_timeout_s`` and no geofence exit older than ``exit_grace_s``
  (there is no maximum visit length: a customer seen all afternoon stays). Otherwise it
  ends at the moment the tracker gives (last seen, or the exit), reason
  ``restart_timeout``, so the visit history in SQLite stays true.

Pure: no I/O, no clock; ``edge.visit_restart`` does the reading, writing and re-ranking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from edge.store_rows import dump_json, require_number, require_text
from edge.visit import Visit, VisitState, VisitTracker

FORMAT = 1
NO_STATE, SUPERSEDED, TIMED_OUT = "restart_no_state", "restart_superseded", "restart_timeout"
# Fields every beacon moves: a change of only these is written every ``drift_s``.
_DRIFTING = ("last_seen", "zone_heard", "zone_rssi")
_STEADY = attrgetter(*(f.name for f in fields(VisitState) if f.name not in _DRIFTING))
_UNSET = -math.inf  # "never" in VisitState (checkin_ts, zone_rssi); null in JSON
_INSIDE = ("enter", "dwell")  # VisitState.geofence while the geofence says inside


@dataclass(frozen=True)
class OpenVisit:
    """A ``visits`` row with no ``ended_at``."""

    visit_id: str
    subject: str | None
    started_at: float
    last_seen_at: float | None
    resume: str | None  # JSON of the saved VisitState


@dataclass(frozen=True)
class Closure:
    """An open row that does not come back: when it ended and why."""

    visit_id: str
    ended_at: float
    reason: str


@dataclass(frozen=True)
class RestoreResult:
    restored: tuple[Visit, ...]
    closed: tuple[Closure, ...]
    states: tuple[VisitState, ...]  # the saved states of ``restored`` (already written)


def encode_state(state: VisitState) -> str:
    """Compact JSON of every field; ``-inf`` ("never") as null, scopes as a sorted list."""
    data: dict[str, Any] = {"v": FORMAT}
    for field in fields(state):
        value = getattr(state, field.name)
        data[field.name] = None if value == _UNSET else value
    data["scopes"] = sorted(state.scopes)
    return dump_json(data, "bad_visit")


def decode_state(text: str | None, visit_id: str, subject: str | None) -> VisitState | None:
    """The saved state of the row ``visit_id`` / ``subject``, or None when it is missing,
    unreadable, of another format or of another visit (never half a state)."""
    if text is None or subject is None:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("v") != FORMAT:
            return None
        state = VisitState(
            visit_id=require_text(data["visit_id"], "bad_visit", "visit_id"),
            subject=require_text(data["subject"], "bad_visit", "subject"),
            started_at=_number(data, "started_at"),
            last_seen=_number(data, "last_seen"),
            checked_in=_flag(data, "checked_in"),
            checkin_ts=_number(data, "checkin_ts", _UNSET),
            scopes=_scopes(data["scopes"]),
            geofence=_geofence(data["geofence"]),
            in_store=_flag(data, "in_store"),
            exit_since=None if data["exit_since"] is None else _number(data, "exit_since"),
            zone=None if data["zone"] is None else require_text(data["zone"], "bad_visit", "zone"),
            zone_since=_number(data, "zone_since"),
            zone_rssi=_number(data, "zone_rssi", _UNSET),
            zone_heard=_number(data, "zone_heard"),
            dwell_fired=_flag(data, "dwell_fired"),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return state if (state.visit_id, state.subject) == (visit_id, subject) else None


def restore_open_visits(
    tracker: VisitTracker, rows: Iterable[OpenVisit], now: float
) -> RestoreResult:
    """Bring the open rows back into ``tracker`` (see the module docstring for the rules)."""
    closed: list[Closure] = []
    newest: dict[str, VisitState] = {}
    for row in rows:
        state = decode_state(row.resume, row.visit_id, row.subject)
        if state is None:
            last = row.last_seen_at if row.last_seen_at is not None else row.started_at
            closed.append(Closure(row.visit_id, max(last, row.started_at), NO_STATE))
            continue
        known = tracker.get(state.subject)  # only on a tracker that already ran
        if known is not None and known.visit_id != state.visit_id:
            closed.append(Closure(state.visit_id, state.last_seen, SUPERSEDED))
            continue
        kept = newest.get(state.subject)
        if kept is not None and _recency(kept) > _recency(state):
            closed.append(Closure(state.visit_id, state.last_seen, SUPERSEDED))
            continue
        if kept is not None:
            closed.append(Closure(kept.visit_id, kept.last_seen, SUPERSEDED))
        newest[state.subject] = state
    for change in tracker.restore(newest.values(), now):
        if change.kind == "visit_ended" and change.visit.ended_at is not None:
            closed.append(Closure(change.visit.visit_id, change.visit.ended_at, TIMED_OUT))
    ids = {state.visit_id for state in newest.values()}
    restored = tuple(v for v in tracker.active() if v.visit_id in ids)
    alive = {v.visit_id for v in restored}
    return RestoreResult(
        restored, tuple(closed), tuple(s for s in newest.values() if s.visit_id in alive)
    )


class Checkpoints:
    """Which active visits need their state written (see the module docstring).

    Remembers, per visit, what was last written (its steady fields and ``last_seen``: a
    tuple compare per visit and tick, ~0.2 us); ``due`` also forgets visits no longer
    active. Not thread-safe: used by the worker thread only.
    """

    def __init__(self, drift_s: float) -> None:
        if not math.isfinite(drift_s) or drift_s < 0:
            raise ValueError("drift_s must be a finite number >= 0")
        self.drift_s = drift_s
        self._written: dict[str, tuple[tuple[object, ...], float]] = {}

    def due(self, active: Iterable[VisitState], limit: int | None = None) -> list[VisitState]:
        """At most ``limit`` states, most urgent first: never written (a new visit, whose
        check-in and consent a crash would otherwise lose), then changed, then only drifted.
        What is left out stays due and comes first at a later tick; the limit bounds the
        tick's write (a crowd changing zones at once must not stall the next check-in)."""
        new: list[VisitState] = []
        changed: list[VisitState] = []
        drifted: list[VisitState] = []
        written: dict[str, tuple[tuple[object, ...], float]] = {}
        for state in active:
            saved = self._written.get(state.visit_id)
            if saved is None:
                new.append(state)
                continue
            written[state.visit_id] = saved
            if _STEADY(state) != saved[0]:
                changed.append(state)
            elif state.last_seen - saved[1] >= self.drift_s:
                drifted.append(state)
        self._written = written
        out = new + changed + drifted
        return out if limit is None else out[:limit]

    def mark(self, states: Iterable[VisitState]) -> None:
        """``states`` are written (their transaction committed)."""
        for state in states:
            self._written[state.visit_id] = (_STEADY(state), state.last_seen)


def _recency(state: VisitState) -> tuple[float, float, str]:
    return (state.last_seen, state.started_at, state.visit_id)


def _number(data: dict[str, Any], key: str, null: float | None = None) -> float:
    value = data[key]
    if value is None and null is not None:
        return null
    return require_number(value, "bad_visit", key)


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def _scopes(value: object) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError("scopes must be a list of strings")
    return frozenset(value)


def _geofence(value: object) -> str | None:
    if value is None:
        return None
    if value in _INSIDE:
        return str(value)
    raise ValueError("geofence must be enter, dwell or null")
