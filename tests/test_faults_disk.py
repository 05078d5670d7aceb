"""Fault: the disk under the edge's SQLite fills up (real ENOSPC on a small tmpfs).

What the store must do meanwhile: keep running (no crash, /healthz 200), acknowledge nothing
it could not write (QoS 1 events stay un-acked and are retried by the edge itself; HTTP
answers 507 ``disk_full``), say so once per episode (one log line, a gauge, readyz 503 with
the reason) and, once space is back, write every accepted event exactly once by itself.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, wait_until
from edge.dispatch import Dispatcher
from edge.messages import Inbound, parse_inbound
from edge.metrics import EdgeMetrics
from edge.storage_faults import StorageHealth, StorageUnavailable
from tests.edge_env import make_env
from tests.fault_env import (
    Publisher,
    basket,
    exactly_once,
    integrity_ok,
    new_id,
    processed_ids,
    record,
)

DISK_BYTES = 16 * 1024 * 1024


class Ballast:
    """Fills the filesystem of ``directory`` until ENOSPC, frees it again."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "ballast.bin"

    def fill(self) -> int:
        written = 0
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            chunk = b"\0" * 65_536
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError:
                    if len(chunk) == 512:
                        break
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.path.unlink()


class PageCap:
    """The fallback when no tmpfs can be mounted (not root): ``PRAGMA max_page_count`` on
    the edge's writer connection makes SQLite answer SQLITE_FULL exactly as a full disk does."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def fill(self) -> int:
        with self.store.write() as conn:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return 0

    def free(self) -> None:
        with self.store.write() as conn:
            conn.execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture()
def small_disk(tmp_path: Path) -> Any:
    """(directory, how): a 16 MB tmpfs (root: CI runs as root on this machine kind), else
    a plain directory and the page cap."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs",
                              str(disk)], capture_output=True, text=True) \
        if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        yield disk, "max_page_count"
        return
    try:
        yield disk, "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def failures(edge: EmbeddedEdge, what: str) -> float:
    value = edge.runtime.metrics.registry.get_sample_value(
        "storeside_storage_write_failures_total", {"what": what})
    return value or 0.0


def status(edge: EmbeddedEdge) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{edge.url}/v1/status", timeout=5).json()
    return answer


def test_a_full_disk_acks_nothing_it_could_not_write_and_recovers_by_itself(
    small_disk: tuple[Path, str], tafeng_zip: Path, fresh_broker: PrivateBroker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk, how = small_disk
    env = make_env(disk, tafeng_zip, fresh_broker.port, n_products=40, n_members=6)
    db = env.settings.db_path
    subjects = env.seed.subjects
    caplog.set_level(logging.WARNING)
    with EmbeddedEdge(env.settings) as edge:
        products = [item.product_id for item in edge.runtime.store.catalog()[:10]]
        pub = Publisher(fresh_broker.host, fresh_broker.port)
        try:
            def send(n: int) -> None:
                for _ in range(n):
                    i = len(pub.sent)
                    pub.publish(env.topics.pos,
                                basket(new_id(), subjects[i % 6], products[i % 10]))

            send(20)
            pub.wait_answered()
            wait_until(lambda: len(pub.accepted) == 20
                       and set(pub.accepted) <= processed_ids(db), 10)

            ballast = Ballast(disk) if how == "tmpfs" else PageCap(edge.runtime.store)
            ballast_bytes = ballast.fill()
            # The WAL may still have room for a few transactions: stream until the disk refuses.
            filled_at = time.monotonic()

            def refused() -> bool:
                send(5)
                return not status(edge)["storage_ok"]

            wait_until(refused, 20, interval=0.02)
            noticed_s = time.monotonic() - filled_at
            send(100)  # while full: the broker accepts them, the edge must not ack them
            pub.wait_answered()
            # it stays full for a while: the edge retries with a backoff, quietly
            wait_until(lambda: failures(edge, "probe") >= 2, 10, interval=0.02)

            # HTTP: refused with a reason, nothing written; a check-in likewise
            http_basket = basket(new_id(), subjects[0], products[0])
            answer = httpx.post(f"{edge.url}/v1/pos", json=http_basket, timeout=10)
            assert answer.status_code == 507, answer.text
            assert answer.json()["detail"] == {"reason": "disk_full"}
            checkin = env.checkin_payload(subjects[1])
            answer = httpx.post(f"{edge.url}/v1/checkin", json=checkin, timeout=10)
            checkin_refused = answer.status_code == 507
            if how == "tmpfs":  # (the page cap lets a row into a page with room: accepted)
                assert checkin_refused and answer.json()["detail"]["reason"] == "disk_full"

            ready = httpx.get(f"{edge.url}/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["storage_error"] == "disk_full"
            assert httpx.get(f"{edge.url}/healthz", timeout=5).status_code == 200
            during = status(edge)
            assert during["worker_alive"] and during["mqtt_connected"]
            assert during["events_waiting_for_disk"] > 0
            metrics = httpx.get(f"{edge.url}/metrics", timeout=5).text
            assert "storeside_storage_full 1.0" in metrics
            waiting = len(set(pub.accepted) - processed_ids(db))
            assert waiting > 0  # accepted by the broker, not written, not acked

            freed_at = time.monotonic()
            ballast.free()
            wait_until(lambda: status(edge)["storage_ok"], 15, interval=0.02)
            wait_until(lambda: set(pub.accepted) <= processed_ids(db), 15, interval=0.02)
            recovery_s = time.monotonic() - freed_at

            # the HTTP callers send again (same event ids): accepted now, once
            assert httpx.post(f"{edge.url}/v1/pos", json=http_basket,
                              timeout=10).status_code == 202
            if checkin_refused:  # its retry continues where the full disk stopped it
                answer = httpx.post(f"{edge.url}/v1/checkin", json=checkin, timeout=10)
                assert answer.status_code == 200 and answer.json()["visit_id"], answer.text
            assert httpx.get(f"{edge.url}/readyz", timeout=5).status_code == 200
            metrics = httpx.get(f"{edge.url}/metrics", timeout=5).text
            assert "storeside_storage_full 0.0" in metrics
            assert 'storeside_storage_episodes_total{reason="disk_full"} 1.0' in metrics
        finally:
            pub.close()

    counts = exactly_once(db, [*pub.accepted, http_basket["event_id"]],
                          checkins=[checkin["event_id"]])
    assert integrity_ok(db)
    storage_logs = [r for r in caplog.records if r.name == "edge.storage_faults"]
    assert [r.levelname for r in storage_logs] == ["ERROR", "WARNING"]  # start, end: once
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING
             and r.name.startswith("edge.")]
    assert len(noisy) <= 6, [r.getMessage() for r in noisy]
    record("disk_full", induced=f"{how}: {DISK_BYTES // 2**20} MB + {ballast_bytes} B ballast"
           if how == "tmpfs" else how,
           noticed_after_s=round(noticed_s, 2), recovery_s=round(recovery_s, 2),
           sent=len(pub.sent), accepted=len(pub.accepted), waiting_for_disk=waiting,
           http_refused_507=1 + checkin_refused, handled=counts["pos"] + counts["checkins"], lost=0,
           duplicates=0, log_lines=len(noisy))


# ---------------------------------------------------------------------- the worker alone

FULL = sqlite3.OperationalError("database or disk is full")


class FlakyDisk:
    """A handler and a group-commit flush that fail while ``full`` is set."""

    def __init__(self) -> None:
        self.full = False
        self.written: list[str] = []
        self.flushed = 0

    def handle(self, msg: Any) -> None:
        if self.full:
            raise FULL
        self.written.append(msg.event_id)

    def flush(self) -> None:
        if self.full:
            raise FULL
        self.flushed += 1


def geofence(event_id: str, mid: int) -> Inbound:
    body = {"v": 1, "event_id": event_id, "ts": time.time(), "subject": "cust-001",
            "transition": "enter"}
    return Inbound("geofence", "t", json.dumps(body).encode(), 1, mid, time.monotonic(),
                   "cust-001")


def test_the_worker_parks_what_the_disk_refused_and_acks_only_after_writing() -> None:
    disk, acked = FlakyDisk(), []
    metrics = EdgeMetrics()
    health = StorageHealth(metrics.registry, probe=lambda: disk.flush())
    dispatcher = Dispatcher({"geofence": disk.handle}, metrics=metrics, on_done=acked.append,
                            queue_size=100, reserved=10, flush=disk.flush, storage=health)
    dispatcher.start()
    try:
        dispatcher.offer(geofence("e1", 1))
        wait_until(lambda: [i.mid for i in acked] == [1], 5)
        disk.full = True
        for mid in range(2, 7):
            dispatcher.offer(geofence(f"e{mid}", mid))
        wait_until(lambda: dispatcher.parked == 5, 5)
        assert [i.mid for i in acked] == [1] and not health.ok
        with pytest.raises(StorageUnavailable):  # an HTTP call: refused at once, 507
            dispatcher.call("geofence", parse_inbound(
                "geofence", geofence("h1", 0).payload, subject="cust-001"), 5)
        disk.full = False
        wait_until(lambda: len(acked) == 6, 10)
        assert disk.written == ["e1", "e2", "e3", "e4", "e5", "e6"]  # arrival order kept
        assert [i.mid for i in acked] == [1, 2, 3, 4, 5, 6] and health.ok
        assert dispatcher.parked == 0
    finally:
        dispatcher.stop()


def test_a_refused_group_commit_holds_its_acks_until_the_rows_are_written() -> None:
    disk, acked = FlakyDisk(), []
    dispatcher = Dispatcher({"geofence": lambda msg: None}, metrics=EdgeMetrics(),
                            on_done=acked.append, queue_size=100, reserved=10,
                            flush=disk.flush)
    disk.full = True
    dispatcher.start()
    try:
        dispatcher.offer(geofence("e1", 1))
        wait_until(lambda: dispatcher._retry_at is not None, 5)  # the flush was refused
        assert acked == []  # handled, but its rows are not written: not acked
        disk.full = False
        wait_until(lambda: [i.mid for i in acked] == [1], 5)
        assert disk.flushed >= 1
    finally:
        dispatcher.stop()
