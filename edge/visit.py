"""One visit per customer, fused from check-in, store geofence and zone beacons.

Pure and clock-free: time comes only from event timestamps and ``tick(now)``, so the same
events give the same visits (and the same visit ids) in tests, replays and after a restart.

Signals and their trust:
* check-in (signed token, explicit act): the strongest; starts a visit, sets consent scopes.
* geofence of the store perimeter: ``enter``/``dwell`` say inside, ``exit`` starts a grace
  period; the visit ends only if nothing says "inside" again for ``exit_grace_s``.
* beacon sightings (zone, RSSI): a zone is entered at or above ``beacon_enter_rssi`` and left
  only below ``beacon_exit_rssi`` (hysteresis: RSSI noise between the two never flips it) or
  when the zone is not heard for ``exit_grace_s``. A zone "counts" (``zone_dwell``, which
  re-ranks with that zone's items) after ``zone_min_dwell_s``, once per entry, and not while
  a geofence exit is pending. Every ``zone_dwell`` is later matched by one ``zone_left``
  (also right before ``visit_ended``); a zone that never counted leaves silently.

Deadlines (dwell, zone lost, exit grace, timeout) fire from ``tick(now)`` and also from any
later event of the same subject, in deadline order, so results do not depend on how often
``tick`` runs. Events older than the subject's latest event are "late": they may not move
state backwards; only a late check-in still counts (it adds consent, never removes presence).

Confidence that the customer is in the store (documented for staff and metrics):
``1 - prod(1 - p)`` over present signals — check-in 1.0, geofence dwell 0.8 / enter 0.6,
zone counted 0.7 / zone entered 0.5 — or 0.3 when only weak signals are left; halved while a
geofence exit is pending; 0.0 once ended.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeAlias

from models.config_checks import check_fields

CHANGE_KINDS = ("visit_started", "checked_in", "zone_dwell", "zone_left", "visit_ended")
GEOFENCE_TRANSITIONS = ("enter", "dwell", "exit")
_P_CHECKIN, _P_GEO_DWELL, _P_GEO_ENTER, _P_ZONE_COUNTED, _P_ZONE, _P_WEAK = (
    1.0, 0.8, 0.6, 0.7, 0.5, 0.3,
)


class InvalidEvent(ValueError):
    """An event the tracker cannot use; ``reason`` is a short code for dead-letter metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class VisitConfig:
    beacon_enter_rssi: float = -70.0
    beacon_exit_rssi: float = -80.0
    zone_min_dwell_s: float = 15.0
    exit_grace_s: float = 90.0
    visit_timeout_s: float = 1800.0
    max_seen_event_ids: int = 100_000
    # A strong sighting of another zone wins over the current zone only if it is stronger than
    # the current zone's last reading, or that reading is older than this (walked away).
    zone_switch_stale_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.beacon_exit_rssi <= self.beacon_enter_rssi:
            raise ValueError("beacon_exit_rssi must be <= beacon_enter_rssi (hysteresis)")
        check_fields(self, ("zone_min_dwell_s", "exit_grace_s", "visit_timeout_s",
                            "zone_switch_stale_s"), minimum=0, finite=True)
        check_fields(self, ("beacon_enter_rssi", "beacon_exit_rssi"), finite=True)
        if self.visit_timeout_s <= 0:
            raise ValueError("visit_timeout_s must be > 0")
        check_fields(self, ("max_seen_event_ids",), minimum=1)


@dataclass(frozen=True)
class CheckinEvent:
    event_id: str
    subject: str
    ts: float
    scopes: frozenset[str]


@dataclass(frozen=True)
class GeofenceEvent:
    event_id: str
    subject: str
    ts: float
    transition: str  # enter | dwell | exit


@dataclass(frozen=True)
class BeaconEvent:
    event_id: str
    subject: str
    ts: float
    zone: str
    rssi: float
    beacon_id: str = ""


Event: TypeAlias = CheckinEvent | GeofenceEvent | BeaconEvent


@dataclass(frozen=True)
class Visit:
    visit_id: str
    subject: str
    started_at: float
    last_seen: float
    checked_in: bool
    scopes: frozenset[str]
    in_store: bool
    zone: str | None
    zone_since: float | None
    confidence: float
    ended_at: float | None


@dataclass(frozen=True)
class VisitChange:
    kind: str
    visit: Visit
    zone: str | None = None


@dataclass
class VisitState:
    """Mutable state of one active visit (snapshots go out as frozen ``Visit``). Copies of
    it are what the edge saves to carry a visit across a restart (``edge.visit_restore``)."""

    visit_id: str
    subject: str
    started_at: float
    last_seen: float
    checked_in: bool = False
    checkin_ts: float = -math.inf
    scopes: frozenset[str] = frozenset()
    geofence: str | None = None  # "enter" | "dwell" while the geofence says inside
    in_store: bool = True
    exit_since: float | None = None
    zone: str | None = None
    zone_since: float = 0.0
    zone_rssi: float = -math.inf
    zone_heard: float = 0.0  # last reading of the current zone at/above the exit threshold
    dwell_fired: bool = False


@dataclass
class _Subject:
    clock: float  # latest event ts applied for this subject: older events are late
    live: VisitState | None = None
    last: Visit | None = None  # latest snapshot, active or ended
    ended_at: float | None = None
    ended_decided: float = -math.inf  # when the end fired (event ts or tick time)


def visit_id_for(subject: str, first_event_id: str) -> str:
    """Deterministic: the same first event of the same subject gives the same visit id."""
    digest = hashlib.sha256(f"{subject}\x1f{first_event_id}".encode()).hexdigest()
    return f"v-{digest[:24]}"


def _validate(event: object) -> Event:
    if not isinstance(event, CheckinEvent | GeofenceEvent | BeaconEvent):
        raise InvalidEvent("unknown_event", f"{type(event).__name__} is not a visit event")
    if not isinstance(event.event_id, str) or not event.event_id:
        raise InvalidEvent("bad_event_id", "event_id must be a non-empty string")
    if not isinstance(event.subject, str) or not event.subject:
        raise InvalidEvent("bad_subject", "subject must be a non-empty string")
    if isinstance(event.ts, bool) or not isinstance(event.ts, int | float) or not math.isfinite(
        event.ts
    ):
        raise InvalidEvent("bad_ts", "ts must be a finite number")
    if isinstance(event, GeofenceEvent) and event.transition not in GEOFENCE_TRANSITIONS:
        raise InvalidEvent("bad_transition", f"transition {event.transition!r}")
    if isinstance(event, BeaconEvent):
        if not isinstance(event.zone, str) or not event.zone:
            raise InvalidEvent("bad_zone", "zone must be a non-empty string")
        if isinstance(event.rssi, bool) or not isinstance(event.rssi, int | float) or \
                not math.isfinite(event.rssi):
            raise InvalidEvent("bad_rssi", "rssi must be a finite number")
    if isinstance(event, CheckinEvent) and not (
        isinstance(event.scopes, frozenset) and all(isinstance(s, str) for s in event.scopes)
    ):
        raise InvalidEvent("bad_scopes", "scopes must be a frozenset of strings")
    return event


class VisitTracker:
    """Fuses events into at most one active visit per subject; see the module docstring.

    Not thread-safe: the edge calls it from its single worker thread. ``tick`` is O(active
    subjects), fine for a store (hundreds of visits); ``apply`` is O(1).
    """

    def __init__(self, config: VisitConfig = VisitConfig()) -> None:
        self.config = config
        self._subjects: dict[str, _Subject] = {}
        # Event ids carry no subject, so they survive ``forget`` and redelivered old events
        # cannot recreate an erased visit. Insertion-ordered: the oldest is evicted first.
        self._seen: dict[str, None] = {}

    # -- public -----------------------------------------------------------------------

    def apply(self, event: Event) -> list[VisitChange]:
        """Apply one event; a duplicate ``event_id`` returns ``[]`` and changes nothing.

        Raises ``InvalidEvent`` (a ``ValueError``) for unusable input, which is not recorded.
        """
        event = _validate(event)
        if event.event_id in self._seen:
            return []
        self._remember(event.event_id)
        ts = float(event.ts)
        state = self._subjects.get(event.subject)
        if state is not None and ts < state.clock:
            return self._late(state, event, ts)
        if state is None:
            state = self._subjects[event.subject] = _Subject(clock=ts)
        state.clock = ts
        out = self._advance(state, ts)
        if state.live is None:
            if not self._starts_visit(event):
                return out
            visit_id = visit_id_for(event.subject, event.event_id)
            state.live = VisitState(visit_id, event.subject, ts, ts)
            started = len(out)
            out += self._on_event(state.live, event, ts)
            out.insert(started, VisitChange("visit_started", self._snapshot(state.live)))
        else:
            out += self._on_event(state.live, event, ts)
        out += self._advance(state, ts)
        if state.live is not None:
            state.last = self._snapshot(state.live)
        return out

    def tick(self, now: float) -> list[VisitChange]:
        """Fire due deadlines; also drop visits ended more than ``visit_timeout_s`` ago (after
        that a late event may start a new visit instead of being refused as late)."""
        out: list[VisitChange] = []
        for subject, state in list(self._subjects.items()):
            if state.live is not None:
                out += self._advance(state, now)
                if state.live is not None:
                    state.last = self._snapshot(state.live)
            elif max(state.clock, state.ended_decided) + self.config.visit_timeout_s <= now:
                del self._subjects[subject]
        return out

    def get(self, subject: str) -> Visit | None:
        """The subject's current visit, or its last ended one until it is dropped by ``tick``."""
        state = self._subjects.get(subject)
        return state.last if state is not None else None

    def active(self) -> list[Visit]:
        return [s.last for s in self._subjects.values() if s.live is not None and s.last]

    def forget(self, subject: str) -> None:
        """Erasure: drop everything kept about the subject."""
        self._subjects.pop(subject, None)

    def states(self) -> list[VisitState]:
        """Copies of the active visits' full states (the restart checkpoint saves them)."""
        return [replace(s.live) for s in self._subjects.values() if s.live is not None]

    def restore(self, saved: Iterable[VisitState], now: float) -> list[VisitChange]:
        """Carry on with visits saved before a restart as if the tracker had run all along:
        deadlines due by ``now`` fire here (a visit silent for ``visit_timeout_s`` ends,
        a pending geofence exit past its grace ends it). A subject already tracked keeps its
        state. Its clock is the saved ``last_seen``, or ``now`` if the wall clock went back
        meanwhile, so new events are never refused as late."""
        out: list[VisitChange] = []
        for copy in saved:
            if copy.subject in self._subjects:
                continue
            state = _Subject(clock=min(copy.last_seen, now), live=replace(copy))
            self._subjects[copy.subject] = state
            out += self._advance(state, now)
            if state.live is not None:
                state.last = self._snapshot(state.live)
        return out

    # -- internals --------------------------------------------------------------------

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > self.config.max_seen_event_ids:
            del self._seen[next(iter(self._seen))]

    def _starts_visit(self, event: Event) -> bool:
        if isinstance(event, CheckinEvent):
            return True
        if isinstance(event, GeofenceEvent):
            return event.transition != "exit"
        return event.rssi >= self.config.beacon_enter_rssi

    def _late(self, state: _Subject, event: Event, ts: float) -> list[VisitChange]:
        """An event older than the subject's latest: only a check-in may still count, and only
        for the active visit, if it is the newest check-in and after any previous visit."""
        live = state.live
        if not isinstance(event, CheckinEvent) or live is None or ts <= live.checkin_ts:
            return []
        if state.ended_at is not None and ts <= state.ended_at:
            return []
        live.checked_in, live.checkin_ts, live.scopes = True, ts, event.scopes
        state.last = self._snapshot(live)
        return [VisitChange("checked_in", state.last)]

    def _on_event(self, live: VisitState, event: Event, ts: float) -> list[VisitChange]:
        cfg = self.config
        live.last_seen = ts
        out: list[VisitChange] = []
        if isinstance(event, CheckinEvent):
            live.checked_in, live.checkin_ts, live.scopes = True, ts, event.scopes
            live.in_store, live.exit_since = True, None
            out.append(VisitChange("checked_in", self._snapshot(live)))
        elif isinstance(event, GeofenceEvent):
            if event.transition == "exit":
                live.geofence, live.in_store = None, False
                if live.exit_since is None:
                    live.exit_since = ts
            else:
                live.geofence, live.in_store, live.exit_since = event.transition, True, None
        else:
            strong = event.rssi >= cfg.beacon_enter_rssi
            if live.zone == event.zone:
                if event.rssi >= cfg.beacon_exit_rssi:
                    live.zone_rssi, live.zone_heard = event.rssi, ts
                else:
                    out += self._leave_zone(live)
            elif strong and (
                live.zone is None
                or event.rssi > live.zone_rssi
                or ts - live.zone_heard >= cfg.zone_switch_stale_s
            ):
                out += self._leave_zone(live)
                live.zone, live.zone_since, live.dwell_fired = event.zone, ts, False
                live.zone_rssi, live.zone_heard = event.rssi, ts
            if strong:
                live.in_store, live.exit_since = True, None
        return out

    def _leave_zone(self, live: VisitState) -> list[VisitChange]:
        zone, counted = live.zone, live.dwell_fired
        live.zone, live.dwell_fired, live.zone_rssi = None, False, -math.inf
        if zone is None or not counted:
            return []  # an uncounted zone was never announced, so its end is not either
        return [VisitChange("zone_left", self._snapshot(live), zone)]

    def _advance(self, state: _Subject, now: float) -> list[VisitChange]:
        """Fire every deadline due by ``now``, earliest first."""
        cfg = self.config
        out: list[VisitChange] = []
        while (live := state.live) is not None:
            due: list[tuple[float, int]] = [(live.last_seen + cfg.visit_timeout_s, 3)]
            if live.zone is not None:
                if not live.dwell_fired and live.exit_since is None:  # not while leaving
                    due.append((live.zone_since + cfg.zone_min_dwell_s, 0))
                due.append((live.zone_heard + cfg.exit_grace_s, 1))
            if live.exit_since is not None:
                due.append((live.exit_since + cfg.exit_grace_s, 2))
            at, what = min(due)
            if at > now:
                break
            if what == 0:
                live.dwell_fired = True
                out.append(VisitChange("zone_dwell", self._snapshot(live), live.zone))
            elif what == 1:
                out += self._leave_zone(live)
            else:
                ended_at = live.exit_since if what == 2 else live.last_seen
                out += self._leave_zone(live)
                state.live, state.ended_at, state.ended_decided = None, ended_at, now
                state.last = replace(
                    self._snapshot(live), ended_at=ended_at, in_store=False, confidence=0.0
                )
                out.append(VisitChange("visit_ended", state.last))
        return out

    def _snapshot(self, live: VisitState) -> Visit:
        return Visit(
            visit_id=live.visit_id,
            subject=live.subject,
            started_at=live.started_at,
            last_seen=live.last_seen,
            checked_in=live.checked_in,
            scopes=live.scopes,
            in_store=live.in_store,
            zone=live.zone,
            zone_since=live.zone_since if live.zone is not None else None,
            confidence=_confidence(live),
            ended_at=None,
        )


def _confidence(live: VisitState) -> float:
    signals: list[float] = []
    if live.checked_in:
        signals.append(_P_CHECKIN)
    if live.geofence == "dwell":
        signals.append(_P_GEO_DWELL)
    elif live.geofence == "enter":
        signals.append(_P_GEO_ENTER)
    if live.zone is not None:
        signals.append(_P_ZONE_COUNTED if live.dwell_fired else _P_ZONE)
    miss = 1.0
    for p in signals:
        miss *= 1.0 - p
    confidence = 1.0 - miss if signals else _P_WEAK
    if live.exit_since is not None:
        confidence *= 0.5
    return min(1.0, max(0.0, confidence))
