"""Hub retention (hub.retention, hub.retention_sweep): a real SQLite hub on a test clock.

Old events, purchase lines and presence go; young ones, consent history and erasure records
stay; aggregates are recomputed from the lines left; a presence sweep changes no feed state;
a second sweep is a no-op; a 100k-event sweep holds the write lock briefly per batch; the
CLI and the lifespan thread run it; /metrics counts the rows per table.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge.probe import wait_until
from hub.cli import main
from hub.devtools import EmbeddedHub, hub_settings
from hub.dsr import erase_member
from hub.ingest import ingest
from hub.members import expire_relevance, import_members, refresh_relevance
from hub.members_csv import parse_members_csv
from hub.retention import cutoffs
from hub.retention_sweep import HubSweeper
from hub.settings import HubRetentionSettings, RelevanceSettings
from hub.storage import HubDB
from tests.hub_env import T0, Clock, basket, csv_text, member_row, subject, write_config

DAY = 86_400.0
CFG = RelevanceSettings()
SETTINGS = HubRetentionSettings()  # 730 / 730 / 180 days


def rows(db: HubDB, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with db.read() as conn:
        return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def feed_state(db: HubDB) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT store, subject, op, reason, seq FROM store_members "
                    "ORDER BY store, subject")


def fresh_aggregates(db: HubDB, subj: str) -> tuple[Any, ...] | None:
    """What ingesting the member's remaining lines from scratch would add up to."""
    found = rows(db, "SELECT COUNT(DISTINCT event_id), SUM(quantity * unit_price), MAX(ts) "
                     "FROM purchases WHERE subject = ?", subj)[0]
    return None if found[0] == 0 else found


@pytest.fixture()
def db(tmp_path: Path) -> Any:
    hub_db = HubDB(tmp_path / "hub.db", clock=Clock())
    yield hub_db
    hub_db.close()


def _import(db: HubDB, *lines: str) -> None:
    parsed = parse_members_csv(csv_text(*lines))
    assert not parsed.errors
    import_members(db, parsed.records, "demo", CFG)


def test_old_rows_go_young_stay_consent_and_erasures_stay(db: HubDB) -> None:
    clock = db.clock
    ana, ben, cy = subject(1), subject(2), subject(3)
    _import(db, member_row(1, home="s1"), member_row(2, home="s1"), member_row(3, home="s1"))
    old = [basket(ana, T0), basket(ben, T0), basket(ben, T0 + 60), basket(None, T0)]
    assert len(ingest(db, "s2", old, CFG).accepted) == 4  # s2: not their home store
    clock.advance(400 * DAY)
    young = basket(ana, clock.now)
    assert ingest(db, "s1", [young], CFG).accepted == [young["event_id"]]
    erase_member(db, cy)
    consent_before = rows(db, "SELECT * FROM consent_events ORDER BY id")
    clock.advance(400 * DAY)  # old: 800 days, young: 400 days

    report = HubSweeper(db, SETTINGS, CFG).sweep()

    assert rows(db, "SELECT event_id FROM events") == [(young["event_id"],)]
    assert rows(db, "SELECT DISTINCT event_id FROM purchases") == [(young["event_id"],)]
    # presence: ana's s2 visit (800 d) and s1 visit (400 d) are both past 180 days
    assert rows(db, "SELECT subject, store FROM presence") == []
    assert report.rows == {"events": 4, "purchases": 8, "presence": 3}, report.as_dict()
    # kept: every member's profile, the whole consent history, the erasure record
    assert {r[0] for r in rows(db, "SELECT subject FROM members")} == {ana, ben}
    assert rows(db, "SELECT * FROM consent_events ORDER BY id") == consent_before
    assert rows(db, "SELECT subject FROM erasures") == [(cy,)]
    # aggregates: ana's recomputed from her young basket, ben's gone with his last line
    agg = rows(db, "SELECT baskets, total_spend, last_purchase_ts FROM aggregates "
                   "WHERE subject = ?", ana)
    assert agg == [fresh_aggregates(db, ana)] and agg[0][0] == 1
    assert rows(db, "SELECT * FROM aggregates WHERE subject = ?", ben) == []
    assert fresh_aggregates(db, ben) is None
    # the home store still holds both (an upsert), s2 was told they are no longer relevant
    state = {(s, subj): (op, reason) for s, subj, op, reason, _ in feed_state(db)}
    assert state[("s1", ana)] == ("upsert", None) and state[("s1", ben)] == ("upsert", None)
    assert state[("s2", ana)] == ("delete", "not_relevant")

    # idempotent: a second sweep finds nothing and changes nothing
    before = (feed_state(db), rows(db, "SELECT * FROM aggregates ORDER BY subject"))
    again = HubSweeper(db, SETTINGS, CFG).sweep()
    assert dict(again.rows) == {} and again.members_recomputed == 0
    assert (feed_state(db), rows(db, "SELECT * FROM aggregates ORDER BY subject")) == before


def test_a_presence_sweep_changes_no_feed_state(db: HubDB) -> None:
    """Members seen at s2 (not home) at many ages; presence_days=1 is raised to the 90-day
    visit window. What the sweep leaves equals what the feed would carry anyway: no new
    sequence numbers, no tombstones, and a full refresh afterwards changes nothing."""
    clock = db.clock
    _import(db, *(member_row(i, home="s1") for i in range(40)))
    for i in range(40):  # visits 0, 5, 10 ... 195 days before the sweep
        clock.now = T0 - i * 5 * DAY
        ingest(db, "s2", [{"event_id": f"c{i}", "kind": "checkin", "subject": subject(i),
                           "created_at": clock.now, "payload": {}}], CFG)
    clock.now = T0
    settings = HubRetentionSettings(presence_days=1.0)
    limits = cutoffs(T0, settings, CFG)
    assert limits.presence_clamped and limits.presence == T0 - 90 * DAY
    for store in ("s1", "s2"):
        expire_relevance(db, store)  # what a poll at T0 does
    before = feed_state(db)

    report = HubSweeper(db, settings, CFG).sweep()

    kept = {r[0] for r in rows(db, "SELECT subject FROM presence WHERE store = 's2'")}
    assert kept == {subject(i) for i in range(40) if i * 5 <= 90}  # 90 days: not before the cutoff
    assert report.rows["presence"] == 40 - len(kept) and report.expired_feed_rows == 0
    assert feed_state(db) == before
    with db.write() as conn:  # consistency: recomputing every member's rows changes nothing
        refresh_relevance(db, conn, [subject(i) for i in range(40)], CFG, data_changed=False)
    assert feed_state(db) == before


def test_a_big_sweep_holds_the_write_lock_briefly(db: HubDB) -> None:
    """100,000 old events (received 800 days ago) and a writer beside the sweep."""
    payload = json.dumps({"visit_id": "v1", "items": [{"product_id": "p1", "rank": 1}]})
    old = T0 - 800 * DAY
    with db.write() as conn:
        conn.executemany(
            "INSERT INTO events(event_id, store, kind, subject, payload, created_at, "
            "received_at) VALUES (?, 's1', 'impression', NULL, ?, ?, ?)",
            [(f"e{i:06d}", payload, old, old + i) for i in range(100_000)])
        conn.execute("INSERT INTO events(event_id, store, kind, subject, payload, created_at, "
                     "received_at) VALUES ('young', 's1', 'checkin', NULL, '{}', ?, ?)",
                     (T0, T0))
    waits: list[float] = []
    done = threading.Event()

    def writer() -> None:  # an ingesting store: one tiny write transaction every 2 ms
        while not done.is_set():
            started = time.perf_counter()
            with db.write() as conn:
                db.next_seq(conn)
            waits.append(time.perf_counter() - started)
            time.sleep(0.002)

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.perf_counter()
    try:
        report = HubSweeper(db, SETTINGS, CFG).sweep()
    finally:
        done.set()
        thread.join()
    elapsed = time.perf_counter() - started
    # 101 event batches (the last one short) + one empty batch for each other rule
    assert report.rows["events"] == 100_000 and report.batches == 101 + 2
    assert rows(db, "SELECT event_id FROM events") == [("young",)]
    mean_ms = report.total_hold_s / report.batches * 1000
    print(f"hub sweep: 100,000 events in {report.batches} batches, {elapsed:.2f} s; write "
          f"hold max {report.max_hold_s * 1000:.1f} ms, mean {mean_ms:.1f} ms; concurrent "
          f"writer: {len(waits)} writes, wait max {max(waits) * 1000:.1f} ms, median "
          f"{statistics.median(waits) * 1000:.2f} ms")
    assert report.max_hold_s < 0.25 and max(waits) < 0.5
    assert len(waits) > 20  # the writer really ran during the sweep


def test_the_cli_sweeps_and_dry_runs(tmp_path: Path, capsys: Any) -> None:
    settings, _, _ = hub_settings(tmp_path, retention={"events_days": 1.0})
    config = write_config(tmp_path / "hub.toml", settings)
    db = HubDB(settings.db_path)
    old = time.time() - 2 * DAY
    try:
        ingest(db, "s1", [basket(None, old)], CFG)
        with db.write() as conn:  # received 2 days ago
            conn.execute("UPDATE events SET received_at = ?", (old,))
    finally:
        db.close()
    assert main(["sweep", "--dry-run", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["due"]["events"] == 1
    assert main(["sweep", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == {"events": 1}
    assert main(["sweep", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == {}


def test_the_serving_hub_sweeps_on_its_thread_and_counts_rows(tmp_path: Path) -> None:
    clock = Clock()
    settings = hub_settings(tmp_path, retention={"sweep_interval_s": 1.0})
    with EmbeddedHub(tmp_path, stores=("s1",), settings=settings, clock=clock) as hub:
        store = hub.store("s1")
        assert store.post("/v1/stores/s1/events",
                          json={"events": [basket(None, T0)]}).status_code == 200
        clock.advance(731 * DAY)
        wait_until(lambda: rows(hub.context.db, "SELECT COUNT(*) FROM events") == [(0,)], 20)
        text = hub.admin().get("/metrics").text
    assert 'storeside_hub_retention_rows_deleted_total{table="events"} 1.0' in text
    assert 'storeside_hub_retention_rows_deleted_total{table="purchases"} 2.0' in text
