"""Visit state machine: unit cases for each rule, then property tests on random streams."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.visit import (
    BeaconEvent,
    CheckinEvent,
    GeofenceEvent,
    InvalidEvent,
    Visit,
    VisitChange,
    VisitConfig,
    VisitTracker,
    visit_id_for,
)

CFG = VisitConfig(zone_min_dwell_s=5, exit_grace_s=20, visit_timeout_s=60,
                  zone_switch_stale_s=4)
ALL = frozenset({"personalize", "staff_display", "app_offers"})
_n = 0


def eid() -> str:
    global _n
    _n += 1
    return f"e{_n}"


def checkin(ts: float, subject: str = "s", scopes: frozenset[str] = ALL) -> CheckinEvent:
    return CheckinEvent(eid(), subject, ts, scopes)


def geo(ts: float, transition: str, subject: str = "s") -> GeofenceEvent:
    return GeofenceEvent(eid(), subject, ts, transition)


def beacon(ts: float, zone: str, rssi: float, subject: str = "s") -> BeaconEvent:
    return BeaconEvent(eid(), subject, ts, zone, rssi)


def kinds(changes: list[VisitChange]) -> list[str]:
    return [c.kind for c in changes]


# -- unit cases -----------------------------------------------------------------------------

def test_checkin_starts_a_visit_with_full_confidence() -> None:
    t = VisitTracker(CFG)
    first = checkin(10)
    changes = t.apply(first)
    assert kinds(changes) == ["visit_started", "checked_in"]
    v = t.get("s")
    assert v is not None and v.checked_in and v.in_store and v.scopes == ALL
    assert v.confidence == 1.0 and v.started_at == 10 and v.ended_at is None
    assert v.visit_id == visit_id_for("s", first.event_id)
    assert t.active() == [v]


def test_geofence_and_beacon_start_visits_weak_beacon_and_exit_do_not() -> None:
    t = VisitTracker(CFG)
    assert t.apply(beacon(0, "dairy", -75, subject="a")) == []  # below enter threshold
    assert t.apply(geo(0, "exit", subject="a")) == []
    assert kinds(t.apply(beacon(1, "dairy", -65, subject="a"))) == ["visit_started"]
    assert kinds(t.apply(geo(0, "enter", subject="b"))) == ["visit_started"]
    b = t.get("b")
    assert b is not None and not b.checked_in and b.confidence == pytest.approx(0.6)
    assert kinds(t.apply(checkin(1, subject="b"))) == ["checked_in"]


def test_duplicate_event_is_ignored() -> None:
    t = VisitTracker(CFG)
    e = checkin(0)
    assert t.apply(e)
    before = t.get("s")
    assert t.apply(e) == []
    assert t.apply(CheckinEvent(e.event_id, "s", 50, frozenset())) == []  # same id, new body
    assert t.get("s") == before


def test_zone_dwell_fires_once_per_entry_after_min_dwell() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    assert t.apply(beacon(1, "dairy", -60)) == []
    assert t.tick(5.9) == []
    dwell = t.tick(6)
    assert kinds(dwell) == ["zone_dwell"] and dwell[0].zone == "dairy"
    assert dwell[0].visit.zone == "dairy" and dwell[0].visit.zone_since == 1
    assert t.tick(7) == [] and t.apply(beacon(8, "dairy", -60)) == []
    left = t.apply(beacon(9, "dairy", -85))
    assert kinds(left) == ["zone_left"] and left[0].zone == "dairy" and left[0].visit.zone is None
    t.apply(beacon(10, "dairy", -65))
    assert kinds(t.apply(beacon(15, "dairy", -66))) == ["zone_dwell"]  # new entry, fires again


def test_zone_without_min_dwell_leaves_silently() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(beacon(1, "dairy", -60))
    assert t.apply(beacon(3, "dairy", -90)) == []
    assert t.get("s").zone is None  # type: ignore[union-attr]
    assert t.tick(30) == []


def test_hysteresis_between_thresholds_keeps_the_zone() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(beacon(0, "dairy", -70))  # exactly the enter threshold enters
    for i, rssi in enumerate([-79, -71, -80, -72, -79.9, -75]):
        assert "zone_left" not in kinds(t.apply(beacon(1 + i, "dairy", rssi)))
        assert t.get("s").zone == "dairy"  # type: ignore[union-attr]
    t2 = VisitTracker(CFG)
    t2.apply(checkin(0))
    for i, rssi in enumerate([-71, -79, -75, -70.5]):  # never reaches -70: never enters
        t2.apply(beacon(1 + i, "dairy", rssi))
        assert t2.get("s").zone is None  # type: ignore[union-attr]


def test_zone_switch_needs_a_stronger_or_fresh_signal() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(beacon(0, "dairy", -60))
    t.apply(beacon(1, "bakery", -65))  # strong, but weaker than dairy's last reading
    assert t.get("s").zone == "dairy"  # type: ignore[union-attr]
    t.apply(beacon(2, "bakery", -75))  # between thresholds: never switches
    assert t.get("s").zone == "dairy"  # type: ignore[union-attr]
    t.apply(beacon(3, "bakery", -55))  # stronger: switches
    assert t.get("s").zone == "bakery"  # type: ignore[union-attr]
    t.apply(beacon(4, "dairy", -68))  # weaker than bakery, bakery heard 1 s ago
    assert t.get("s").zone == "bakery"  # type: ignore[union-attr]
    t.apply(beacon(8, "dairy", -68))  # bakery not heard for 5 s >= stale 4 s: walked away
    assert t.get("s").zone == "dairy"  # type: ignore[union-attr]


def test_lost_zone_signal_leaves_after_grace() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(beacon(0, "dairy", -60))
    assert kinds(t.tick(5)) == ["zone_dwell"]
    assert t.tick(19.9) == []
    assert kinds(t.tick(20)) == ["zone_left"]


def test_geofence_exit_ends_only_after_grace_and_reentry_cancels() -> None:
    t = VisitTracker(CFG)
    t.apply(geo(0, "enter"))
    t.apply(checkin(1))
    t.apply(geo(10, "exit"))
    v = t.get("s")
    assert v is not None and not v.in_store and v.confidence == 0.5 and v.ended_at is None
    t.apply(beacon(15, "dairy", -90))  # weak signal does not cancel the exit
    assert t.tick(29.9) == []
    t.apply(geo(29.95, "enter"))  # back inside just in time
    assert t.tick(100) == [] or "visit_ended" not in kinds(t.tick(100))
    t2 = VisitTracker(CFG)
    t2.apply(checkin(0))
    t2.apply(geo(10, "exit"))
    assert t2.tick(29.99) == []
    ended = t2.tick(30)
    assert kinds(ended) == ["visit_ended"]
    assert ended[0].visit.ended_at == 10 and ended[0].visit.confidence == 0.0
    assert t2.active() == [] and t2.get("s") == ended[0].visit


def test_strong_beacon_or_checkin_cancels_a_pending_exit() -> None:
    for cancel in (lambda ts: beacon(ts, "dairy", -60), lambda ts: checkin(ts)):
        t = VisitTracker(CFG)
        t.apply(geo(0, "enter"))
        t.apply(geo(5, "exit"))
        t.apply(cancel(10))
        assert t.tick(200)[-1].kind == "visit_ended"
        assert t.get("s").ended_at == 10  # type: ignore[union-attr]  # timeout, not the exit


def test_no_dwell_while_exit_pending() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(beacon(1, "dairy", -60))
    t.apply(geo(2, "exit"))
    assert "zone_dwell" not in kinds(t.tick(21))
    assert kinds(t.tick(22)) == ["visit_ended"]


def test_timeout_without_any_signal() -> None:
    t = VisitTracker(CFG)
    t.apply(beacon(0, "dairy", -60))
    assert kinds(t.tick(5)) == ["zone_dwell"]
    t.apply(beacon(15, "dairy", -78))  # weak but above exit: keeps zone and visit
    assert t.tick(34.9) == []
    assert kinds(t.tick(35)) == ["zone_left"]  # zone not heard for the grace time
    t.apply(beacon(40, "bakery", -95))  # too weak for a zone, still a sign of presence
    assert t.tick(99.9) == []
    ended = t.tick(100)
    assert kinds(ended) == ["visit_ended"] and ended[0].visit.ended_at == 40


def test_deadlines_fire_from_events_too_not_only_from_tick() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(beacon(1, "dairy", -60))
    t.apply(geo(10, "exit"))
    changes = t.apply(checkin(200))  # no tick in between
    # dairy went quiet at 21 (heard at 1 + grace 20), then the exit grace ran out at 30
    assert kinds(changes) == ["zone_left", "visit_ended", "visit_started", "checked_in"]
    assert changes[1].visit.visit_id != changes[2].visit.visit_id
    assert changes[1].visit.ended_at == 10


def test_out_of_order_events_do_not_move_state_backwards() -> None:
    t = VisitTracker(CFG)
    t.apply(geo(0, "enter"))
    t.apply(beacon(10, "dairy", -60))
    before = t.get("s")
    assert t.apply(geo(5, "exit")) == []  # late exit: ignored
    assert t.apply(beacon(6, "dairy", -95)) == []  # late weak reading: ignored
    assert t.apply(beacon(7, "bakery", -40)) == []  # late zone switch: ignored
    assert t.get("s") == before
    late = t.apply(checkin(8))  # a late check-in still checks in
    assert kinds(late) == ["checked_in"] and late[0].visit.last_seen == 10
    assert t.apply(checkin(7, scopes=frozenset())) == []  # older than the latest check-in
    assert t.get("s").scopes == ALL  # type: ignore[union-attr]


def test_checkin_after_end_starts_a_new_visit_and_late_ones_do_not_reopen() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    first = t.get("s")
    t.tick(100)
    # Delivered late but newer than anything of the ended visit: a new visit, not a reopen.
    assert kinds(t.apply(checkin(50))) == ["visit_started", "checked_in"]
    assert t.get("s").visit_id != first.visit_id  # type: ignore[union-attr]
    t2 = VisitTracker(CFG)
    t2.apply(checkin(0))
    t2.apply(beacon(30, "dairy", -90))
    t2.tick(200)
    assert t2.apply(checkin(20)) == []  # late: before the last signal of the ended visit
    new = t2.apply(checkin(300))
    assert kinds(new) == ["visit_started", "checked_in"]
    assert first is not None and new[0].visit.visit_id != first.visit_id


def test_visit_id_is_the_same_after_a_restart() -> None:
    events = [geo(0, "enter"), checkin(3), beacon(4, "dairy", -60)]
    ids = set()
    for _ in range(2):
        t = VisitTracker(CFG)
        for e in events:
            t.apply(e)
        ids.add(t.get("s").visit_id)  # type: ignore[union-attr]
    assert len(ids) == 1


def test_forget_erases_and_redelivery_does_not_recreate() -> None:
    t = VisitTracker(CFG)
    e = checkin(0)
    t.apply(e)
    t.forget("s")
    assert t.get("s") is None and t.active() == []
    assert t.apply(e) == []
    t.forget("nobody")


def test_ended_visits_are_dropped_after_the_timeout() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.tick(70)  # ended (at 0) when ticked at 70
    assert t.get("s") is not None
    t.tick(129)
    assert t.get("s") is not None
    t.tick(130)
    assert t.get("s") is None


def test_seen_ids_are_bounded() -> None:
    t = VisitTracker(VisitConfig(max_seen_event_ids=2))
    a, b, c = checkin(0, "a"), checkin(0, "b"), checkin(0, "c")
    for e in (a, b, c):
        t.apply(e)
    assert t.apply(c) == [] and t.apply(b) == []
    assert len(t._seen) == 2


@pytest.mark.parametrize(
    "bad",
    [GeofenceEvent("x", "s", 0, "teleport"), BeaconEvent("x", "s", 0, "dairy", float("nan")),
     BeaconEvent("x", "s", 0, "", -60), CheckinEvent("", "s", 0, ALL),
     CheckinEvent("x", "", 0, ALL), CheckinEvent("x", "s", float("inf"), ALL),
     CheckinEvent("x", "s", 0, {"personalize"}),  # type: ignore[arg-type]
     "not an event"],
)
def test_invalid_events_raise_a_clear_error_and_are_not_recorded(bad: object) -> None:
    t = VisitTracker(CFG)
    with pytest.raises(InvalidEvent):
        t.apply(bad)  # type: ignore[arg-type]
    assert t.apply(CheckinEvent("x", "s", 0, ALL))  # the id was not burnt


@pytest.mark.parametrize(
    "kw",
    [{"beacon_enter_rssi": -85.0}, {"exit_grace_s": -1.0}, {"visit_timeout_s": 0.0},
     {"zone_min_dwell_s": float("nan")}, {"max_seen_event_ids": 0}],
)
def test_config_is_validated(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VisitConfig(**kw)  # type: ignore[arg-type]


# -- properties -----------------------------------------------------------------------------

SUBJECTS = ("a", "b", "c")
ZONES = ("dairy", "bakery", "wine")


@st.composite
def events(draw: st.DrawFn) -> list[object]:
    """Random ops: events of a few subjects at ts 0..300, shuffled by construction, plus
    ticks; event ids unique per drawn event (duplicates are added by the tests)."""
    n = draw(st.integers(0, 40))
    ops: list[object] = []
    for i in range(n):
        subject = draw(st.sampled_from(SUBJECTS))
        ts = draw(st.floats(0, 300, allow_nan=False))
        kind = draw(st.sampled_from(("checkin", "geo", "beacon", "beacon", "tick")))
        if kind == "checkin":
            scopes = draw(st.frozensets(st.sampled_from(sorted(ALL))))
            ops.append(CheckinEvent(f"id{i}", subject, ts, scopes))
        elif kind == "geo":
            ops.append(GeofenceEvent(f"id{i}", subject, ts,
                                     draw(st.sampled_from(("enter", "dwell", "exit")))))
        elif kind == "beacon":
            ops.append(BeaconEvent(f"id{i}", subject, ts, draw(st.sampled_from(ZONES)),
                                   draw(st.floats(-100, -40, allow_nan=False))))
        else:
            ops.append(("tick", ts))
    return ops


def run(ops: list[object], config: VisitConfig = CFG) -> tuple[VisitTracker, list[tuple]]:
    """Apply ops; returns the tracker and (time, change) pairs, time = event ts or tick."""
    t = VisitTracker(config)
    out: list[tuple] = []
    for op in ops:
        if isinstance(op, tuple):
            out += [(op[1], c) for c in t.tick(op[1])]
        else:
            out += [(op.ts, c) for c in t.apply(op)]  # type: ignore[attr-defined]
    return t, out


def check_invariants(t: VisitTracker, out: list[tuple], config: VisitConfig = CFG) -> None:
    open_visit: dict[str, str] = {}
    ended: set[str] = set()
    in_zone: dict[str, str | None] = {}
    last_seen: dict[str, float] = {}
    for when, change in out:
        v: Visit = change.visit
        assert 0.0 <= v.confidence <= 1.0
        assert v.visit_id not in ended, "an ended visit changed again"
        assert v.last_seen >= last_seen.get(v.visit_id, -1e18), "last_seen went backwards"
        last_seen[v.visit_id] = v.last_seen
        if change.kind == "visit_started":
            assert v.subject not in open_visit, "two active visits for one subject"
            open_visit[v.subject] = v.visit_id
        else:
            assert open_visit.get(v.subject) == v.visit_id
        if change.kind == "zone_dwell":
            assert in_zone.get(v.visit_id) is None and change.zone == v.zone
            in_zone[v.visit_id] = change.zone
        if change.kind == "zone_left":
            assert in_zone.get(v.visit_id) == change.zone
            in_zone[v.visit_id] = None
        if change.kind == "visit_ended":
            assert in_zone.get(v.visit_id) is None, "zone_dwell without zone_left"
            assert v.ended_at is not None and v.confidence == 0.0
            assert when >= v.ended_at + min(config.exit_grace_s, config.visit_timeout_s)
            del open_visit[v.subject]
            ended.add(v.visit_id)
    active = t.active()
    assert len({v.subject for v in active}) == len(active)
    assert {v.subject: v.visit_id for v in active} == open_visit
    for subject in SUBJECTS:
        v = t.get(subject)
        assert v is None or 0.0 <= v.confidence <= 1.0


@settings(max_examples=150, deadline=None, database=None)
@given(events(), st.randoms(use_true_random=False))
def test_random_streams_keep_the_invariants(ops: list[object], rnd) -> None:
    ordered = sorted(ops, key=lambda o: o[1] if isinstance(o, tuple) else o.ts)  # type: ignore
    for stream in (ops, ordered):
        t, out = run(stream)
        check_invariants(t, out)
    rnd.shuffle(ops)
    t, out = run(ops)
    check_invariants(t, out)


@settings(max_examples=150, deadline=None, database=None)
@given(events(), st.data())
def test_duplicates_change_nothing(ops: list[object], data: st.DataObject) -> None:
    _, expected = run(ops)
    with_dups = list(ops)
    for _ in range(data.draw(st.integers(0, 15))):
        if not ops:
            break
        i = data.draw(st.integers(0, len(ops) - 1))
        if isinstance(ops[i], tuple):
            continue
        at = with_dups.index(ops[i]) + 1
        with_dups.insert(data.draw(st.integers(at, len(with_dups))), ops[i])
    t, got = run(with_dups)
    assert got == expected
    t_again, again = run(ops)  # deterministic: same stream, same visits and ids
    assert again == expected
    assert [t.get(s) for s in SUBJECTS] == [t_again.get(s) for s in SUBJECTS]


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(st.floats(0.1, 19.9), st.sampled_from(ZONES),
                          st.floats(-80, -70, exclude_max=True)), max_size=60))
def test_rssi_between_thresholds_never_flips_the_zone(readings) -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(beacon(0, "dairy", -60))
    ts = 0.0
    for gap, zone, rssi in readings:
        ts += min(gap, CFG.exit_grace_s / 2)  # dairy itself is heard often enough
        changes = t.apply(beacon(ts, zone, rssi))
        changes += t.apply(beacon(ts, "dairy", max(rssi, -80.0)))
        assert "zone_left" not in kinds(changes)
        assert t.get("s").zone == "dairy"  # type: ignore[union-attr]


@settings(max_examples=150, deadline=None, database=None)
@given(st.floats(0, 1000), st.floats(0, 200), st.lists(st.floats(0, 1), max_size=20))
def test_exit_ends_the_visit_only_after_grace(exit_at: float, back_after: float,
                                             ticks: list[float]) -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(exit_at - 5))
    first = t.get("s")
    t.apply(geo(exit_at, "exit"))
    back = exit_at + back_after
    changes: list[VisitChange] = []
    for f in sorted(ticks):
        now = exit_at + f * back_after
        ticked = t.tick(now)
        assert "visit_ended" not in kinds(ticked) or now >= exit_at + CFG.exit_grace_s
        changes += ticked
    changes += t.apply(geo(back, "enter"))
    if back < exit_at + CFG.exit_grace_s:  # back inside in time: the same visit goes on
        assert "visit_ended" not in kinds(changes)
        assert t.active() == [t.get("s")] and t.get("s").in_store  # type: ignore[union-attr]
        assert t.get("s").visit_id == first.visit_id  # type: ignore[union-attr]
    else:  # too late: the old visit ended at the exit, the return is a new visit
        ended = [c.visit for c in changes if c.kind == "visit_ended"]
        assert len(ended) == 1 and ended[0].ended_at == exit_at
        assert kinds(changes)[-1] == "visit_started"
