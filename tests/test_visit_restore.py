"""Visits across a restart, pure part: the saved state, what comes back, what is closed."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.store import EdgeStore
from edge.visit import CheckinEvent, VisitChange, VisitState, VisitTracker
from edge.visit_restore import (
    NO_STATE,
    SUPERSEDED,
    TIMED_OUT,
    Checkpoints,
    Closure,
    OpenVisit,
    decode_state,
    encode_state,
    restore_open_visits,
)
from tests.test_visit import ALL, CFG, beacon, checkin, events, geo, kinds


def saved_rows(tracker: VisitTracker) -> list[OpenVisit]:
    """The open rows a checkpoint of ``tracker`` leaves in SQLite."""
    return [OpenVisit(s.visit_id, s.subject, s.started_at, s.last_seen, encode_state(s))
            for s in tracker.states()]


def restarted(before: VisitTracker, now: float) -> tuple[VisitTracker, tuple[Closure, ...]]:
    after = VisitTracker(before.config)
    result = restore_open_visits(after, saved_rows(before), now)
    return after, result.closed


# -- the saved state --------------------------------------------------------------------------

def test_state_survives_json_including_never_and_pending_exit() -> None:
    t = VisitTracker(CFG)
    t.apply(geo(0, "enter"))  # not checked in: checkin_ts is -inf ("never")
    t.apply(beacon(1, "dairy", -60))
    t.apply(geo(2, "exit"))
    (state,) = t.states()
    assert state.checkin_ts == -math.inf and state.exit_since == 2 and state.zone == "dairy"
    text = encode_state(state)
    assert json.loads(text)["checkin_ts"] is None  # strict JSON: no -Infinity
    assert decode_state(text, state.visit_id, "s") == state


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(v=2),                    # a format this software does not know
        lambda d: d.update(visit_id="v-other"),     # another visit's state
        lambda d: d.update(scopes="personalize"),   # consent must be a list
        lambda d: d.update(last_seen=float("nan")),
        lambda d: d.update(checked_in=1),
        lambda d: d.update(geofence="exit"),
        lambda d: d.pop("zone_heard"),
    ],
)
def test_a_bad_saved_state_is_refused_whole(mutate) -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    (state,) = t.states()
    data = json.loads(encode_state(state))
    mutate(data)
    assert decode_state(json.dumps(data), state.visit_id, "s") is None
    assert decode_state("{not json", state.visit_id, "s") is None
    assert decode_state(None, state.visit_id, "s") is None
    assert decode_state(encode_state(state), state.visit_id, "someone-else") is None


# -- restore ----------------------------------------------------------------------------------

def test_an_open_visit_comes_back_as_it_was() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0, scopes=frozenset({"personalize"})))
    t.apply(beacon(1, "dairy", -60))
    t.tick(7)  # dwell counted
    before = t.get("s")
    after, closed = restarted(t, now=15)
    assert closed == ()
    assert after.active() == [before]  # same visit id, check-in, scopes, zone, confidence
    # it carries on: the same visit, its zone already counted (no second dwell) ...
    changes = after.apply(beacon(16, "dairy", -60)) + after.tick(20)
    assert "visit_started" not in kinds(changes) and "zone_dwell" not in kinds(changes)
    # ... and lost after the grace, as if the edge had run all along
    assert kinds(after.tick(16 + CFG.exit_grace_s)) == ["zone_left"]
    assert after.get("s").visit_id == before.visit_id  # type: ignore[union-attr]


def test_a_visit_silent_past_the_timeout_is_closed_when_it_was_last_seen() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(checkin(10, subject="fresh"))
    old = t.get("s")
    after, closed = restarted(t, now=10 + CFG.visit_timeout_s - 1)
    assert closed == (Closure(old.visit_id, 0, TIMED_OUT),)  # type: ignore[union-attr]
    assert [v.subject for v in after.active()] == ["fresh"]


def test_a_pending_exit_past_its_grace_ends_the_visit_at_the_exit() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    t.apply(geo(5, "exit"))
    visit_id = t.get("s").visit_id  # type: ignore[union-attr]
    assert restarted(t, now=5 + CFG.exit_grace_s)[1] == (Closure(visit_id, 5, TIMED_OUT),)
    after, closed = restarted(t, now=5 + CFG.exit_grace_s - 1)  # still within the grace
    assert closed == () and not after.get("s").in_store  # type: ignore[union-attr]
    after.apply(geo(24.5, "enter"))  # came back in time: the same visit
    assert after.get("s").visit_id == visit_id and after.get("s").in_store  # type: ignore


def test_rows_without_state_are_closed_and_one_visit_per_subject_is_kept() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    (newer,) = saved_rows(t)
    older = OpenVisit("v-older", "s", -50.0, -40.0, encode_state(
        replace(t.states()[0], visit_id="v-older", started_at=-50.0, last_seen=-40.0)))
    legacy = OpenVisit("v-legacy", "x", -30.0, None, None)  # older software: no state
    after = VisitTracker(CFG)
    result = restore_open_visits(after, [newer, older, legacy], now=1)
    assert sorted(result.closed, key=lambda c: c.visit_id) == [
        Closure("v-legacy", -30.0, NO_STATE), Closure("v-older", -40.0, SUPERSEDED)]
    assert [v.visit_id for v in result.restored] == [newer.visit_id]
    assert [s.visit_id for s in result.states] == [newer.visit_id]
    # a tracker that already follows the customer keeps its visit; the row is closed
    again = restore_open_visits(after, [OpenVisit("v-late", "s", 0.0, 0.5, encode_state(
        replace(t.states()[0], visit_id="v-late", last_seen=0.5)))], now=1)
    assert again.closed == (Closure("v-late", 0.5, SUPERSEDED),) and again.restored == ()
    assert after.get("s").visit_id == newer.visit_id  # type: ignore[union-attr]


def test_a_clock_that_went_back_does_not_make_new_events_late() -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(100))
    after, closed = restarted(t, now=50)  # the device's clock is behind the saved one
    assert closed == ()
    assert "checked_in" in kinds(after.apply(checkin(51, scopes=ALL)))


# -- checkpoints ------------------------------------------------------------------------------

def test_checkpoints_write_changes_at_once_and_time_only_every_drift() -> None:
    t = VisitTracker(CFG)
    plan = Checkpoints(drift_s=30)
    t.apply(checkin(0))
    first = plan.due(t.states())
    assert [s.subject for s in first] == ["s"]
    plan.mark(first)
    assert plan.due(t.states()) == []
    t.apply(geo(10, "dwell"))  # geofence state changed: due now
    plan.mark(plan.due(t.states()))
    t.apply(geo(20, "dwell"))  # only time moved on: not yet
    assert plan.due(t.states()) == []
    t.apply(geo(40, "dwell"))  # 30 s of drift since the last write
    assert [s.last_seen for s in plan.due(t.states())] == [40]
    t.forget("s")
    assert plan.due(t.states()) == [] and plan._written == {}  # forgotten with the visit


def test_a_bounded_checkpoint_writes_new_visits_first_and_carries_the_rest_over() -> None:
    t = VisitTracker(CFG)
    plan = Checkpoints(drift_s=30)
    for name in ("a", "b", "c"):
        t.apply(checkin(0, subject=name))
    plan.mark(plan.due(t.states()))
    for name in ("a", "b", "c"):
        t.apply(geo(5, "dwell", subject=name))  # three changed visits
    t.apply(checkin(6, subject="new"))  # and one never written
    first = plan.due(t.states(), limit=2)
    assert first[0].subject == "new" and len(first) == 2
    plan.mark(first)
    rest = plan.due(t.states(), limit=2)  # what was left out is still due
    assert len(rest) == 2 and {s.subject for s in first + rest} == {"new", "a", "b", "c"}
    plan.mark(rest)
    assert plan.due(t.states(), limit=2) == []


def test_checkpoints_refuse_a_bad_drift() -> None:
    with pytest.raises(ValueError):
        Checkpoints(drift_s=float("nan"))


# -- the property: a restart changes nothing --------------------------------------------------

def _by_subject(changes: list[VisitChange]) -> dict[str, list[VisitChange]]:
    out: dict[str, list[VisitChange]] = {}
    for change in changes:
        out.setdefault(change.visit.subject, []).append(change)
    return out


@settings(max_examples=150, deadline=None, database=None)
@given(events(), st.floats(0, 150), events())
def test_a_restart_from_the_checkpoint_changes_nothing_that_follows(
    before: list[object], down_s: float, later: list[object]
) -> None:
    """Saved at the crash, restored ``down_s`` later: the same visits come back, the same
    ones end, and every later event and tick gives exactly the same changes."""
    kept = VisitTracker(CFG)
    crash = 0.0
    for op in before:
        if isinstance(op, tuple):
            kept.tick(op[1])
        else:
            kept.apply(op)  # type: ignore[arg-type]
        crash = max(crash, op[1] if isinstance(op, tuple) else op.ts)  # type: ignore
    restart = crash + down_s
    states = [decode_state(encode_state(s), s.visit_id, s.subject) for s in kept.states()]
    assert states == kept.states()
    back = VisitTracker(CFG)
    restored = back.restore([s for s in states if s is not None], restart)
    assert _by_subject(restored) == _by_subject(kept.tick(restart))
    assert sorted(back.active(), key=lambda v: v.subject) == sorted(
        kept.active(), key=lambda v: v.subject)
    for op in sorted(later, key=lambda o: o[1] if isinstance(o, tuple) else o.ts):  # type: ignore
        if isinstance(op, tuple):
            now = restart + op[1]
            assert _by_subject(back.tick(now)) == _by_subject(kept.tick(now))
        else:
            event = replace(op, event_id=f"after-{op.event_id}", ts=restart + op.ts)  # type: ignore
            assert back.apply(event) == kept.apply(event)


# -- the rows in SQLite -----------------------------------------------------------------------

def test_checkpoint_and_close_touch_only_open_rows_and_never_create_one(tmp_path: Path) -> None:
    t = VisitTracker(CFG)
    t.apply(checkin(0))
    (state,) = t.states()
    visit = t.get("s")
    assert visit is not None
    with EdgeStore(tmp_path / "edge.db") as store:
        assert store.checkpoint_visits([(visit, encode_state(state))]) == set()  # no row yet
        store.save_visit(visit.visit_id, "s", 0.0, None, None, 1.0, True)
        assert store.checkpoint_visits([(visit, encode_state(state))]) == {visit.visit_id}
        assert store.open_visits() == [OpenVisit(visit.visit_id, "s", 0.0, 0.0,
                                                 encode_state(state))]
        assert store.close_visits([Closure(visit.visit_id, 5.0, TIMED_OUT)]) == 1
        assert store.close_visits([Closure(visit.visit_id, 9.0, TIMED_OUT)]) == 0  # once
        assert store.checkpoint_visits([(visit, encode_state(state))]) == set()  # ended
        assert store.open_visits() == []
        record = store.visit(visit.visit_id)
        assert record is not None and record.ended_at == 5.0


def test_open_rows_are_read_through_the_partial_index(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "edge.db") as store, store.write() as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT visit_id FROM visits WHERE ended_at IS NULL "
            "ORDER BY started_at, visit_id"
        ).fetchall()
    assert "visits_open" in " ".join(str(row[-1]) for row in plan)


def test_states_are_copies_of_the_trackers_own() -> None:
    t = VisitTracker(CFG)
    t.apply(CheckinEvent("e-own", "own", 0, ALL))
    (state,) = t.states()
    assert isinstance(state, VisitState)
    state.last_seen = 99  # changing a copy (or what was restored from it) changes nothing
    assert t.get("own").last_seen == 0  # type: ignore[union-attr]
    back = VisitTracker(CFG)
    back.restore([state], 100)
    state.zone = "wine"
    assert back.states()[0].zone is None and back.states()[0].last_seen == 99
