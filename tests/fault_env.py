"""The fault matrix (issue 6, part 4): shared pieces of ``tests/test_faults_*.py``.

Every fault test drives real traffic through a real broker into a real edge (SQLite file),
induces the fault, lets the store recover by itself and then checks, end to end, that no
ACCEPTED event was lost or handled twice. Accepted means: a QoS 1 event the broker PUBACKed
to its publisher with a success code (``Publisher.accepted``), an HTTP event answered 2xx.

======================  ========================  ==========================================
fault                   test                      how it is induced
======================  ========================  ==========================================
broker restart          test_faults_broker.py     Mosquitto SIGTERM + start, same port,
                                                  with and without persistence
hub down                test_faults_hub.py        ``storeside-hub serve`` stopped mid-stream,
                                                  started again (same port, same DB)
kill -9 of the edge     test_faults_kill.py       SIGKILL of ``storeside-edge`` at seeded
                                                  random points while events stream
disk nearly full        test_faults_disk.py       edge DB on a small tmpfs filled with a
                                                  ballast file (real ENOSPC)
clock skew              test_faults_clock.py      app ``ts``, token times, edge and hub
                                                  clocks shifted by seconds to hours
======================  ========================  ==========================================

Each test prints one ``FAULT-FIGURES {json}`` line (``pytest -s``) and appends it to the file
named by ``STORESIDE_FAULT_FIGURES`` when set; docs/faults.md carries the measured matrix.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.probe import wait_until


def record(fault: str, **figures: Any) -> dict[str, Any]:
    """Print (and, with ``STORESIDE_FAULT_FIGURES``, append) one fault's measured figures."""
    row = {"fault": fault, **figures}
    line = json.dumps(row, sort_keys=True, default=str)
    print(f"FAULT-FIGURES {line}")
    target = os.environ.get("STORESIDE_FAULT_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")
    return row


class Publisher:
    """An app / till client as the field runs it: MQTT 5, persistent session (Clean Start 0),
    automatic reconnect; paho resends every QoS 1 message not yet PUBACKed after a reconnect.

    ``accepted``: event ids the broker PUBACKed with a success code (it has them: queued for
    the edge's session). ``refused``: PUBACKed with a failure code, e.g. 16 "no matching
    subscribers" (nobody subscribed: the broker did not keep it), so not accepted."""

    def __init__(self, host: str, port: int, client_id: str | None = None,
                 max_inflight: int = 100) -> None:
        self.client_id = client_id or f"pub-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._mids: dict[int, str] = {}
        self._early: dict[int, Any] = {}
        self.sent: list[str] = []
        self.accepted: dict[str, float] = {}  # event id -> monotonic time of its PUBACK
        self.refused: dict[str, str] = {}
        self._connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(0.1, 1.0)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self._connected.clear()
        client.on_publish = self._on_publish
        self.client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect_async(host, port, keepalive=5, clean_start=False, properties=props)
        client.loop_start()
        if not self._connected.wait(10):
            raise TimeoutError("publisher did not connect")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    props: Any = None) -> None:
        if not reason.is_failure:
            self._connected.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    props: Any = None) -> None:
        with self._lock:
            event_id = self._mids.pop(mid, None)
            if event_id is None:  # answered before ``publish`` noted its mid
                self._early[mid] = reason
                return
            self._answer(event_id, reason)

    def _answer(self, event_id: str, reason: Any) -> None:
        if reason is None or not reason.is_failure:
            self.accepted[event_id] = time.monotonic()
        else:
            self.refused[event_id] = str(reason)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """QoS 1; never blocks: while disconnected paho keeps it and sends it later.
        (paho is called outside our lock: its network thread holds its own lock while it
        calls ``_on_publish``, which takes ours.)"""
        event_id = payload["event_id"]
        info = self.client.publish(topic, json.dumps(payload), qos=1)
        with self._lock:
            self.sent.append(event_id)
            if info.mid in self._early:
                self._answer(event_id, self._early.pop(info.mid))
            else:
                self._mids[info.mid] = event_id

    @property
    def answered(self) -> int:
        with self._lock:
            return len(self.accepted) + len(self.refused)

    def wait_answered(self, timeout: float = 30.0) -> None:
        """Until the broker answered every publish (PUBACK, success or not)."""
        wait_until(lambda: self.answered >= len(self.sent), timeout, interval=0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------- what an edge holds


def edge_rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of a SQLite file read-only (never writes beside the running process)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def processed_ids(db: Path) -> set[str]:
    return {r[0] for r in edge_rows(db, "SELECT event_id FROM processed_events")}


def exactly_once(db: Path, pos: Iterable[str], feedback: Iterable[str] = (),
                 checkins: Iterable[str] = (), *, lines: int = 1) -> dict[str, int]:
    """Assert each POS basket (``lines`` lines, basket id = event id), feedback and check-in
    event is in the edge's SQLite exactly once; returns the counts found."""
    pos, feedback, checkins = set(pos), set(feedback), set(checkins)
    marks = Counter(r[0] for r in edge_rows(db, "SELECT event_id FROM processed_events"))
    basket_lines = Counter(r[0] for r in edge_rows(db, "SELECT basket_id FROM purchases"))
    feedback_rows = Counter(r[0] for r in edge_rows(db, "SELECT event_id FROM feedback"))
    missing = sorted((pos | feedback | checkins) - set(marks))
    assert not missing, f"{len(missing)} accepted events not handled, e.g. {missing[:3]}"
    doubled_pos = {b: n for b, n in basket_lines.items() if b in pos and n != lines}
    assert not doubled_pos, f"baskets with a wrong number of lines: {list(doubled_pos)[:3]}"
    assert pos <= set(basket_lines), "a handled basket has no purchase lines"
    doubled_fb = {e: n for e, n in feedback_rows.items() if n != 1}
    assert not doubled_fb and feedback <= set(feedback_rows), "feedback not exactly once"
    return {"pos": sum(1 for e in pos if e in basket_lines),
            "feedback": sum(1 for e in feedback if e in feedback_rows),
            "checkins": sum(1 for e in checkins if e in marks), "duplicates": 0}


def integrity_ok(db: Path) -> bool:
    return edge_rows(db, "PRAGMA integrity_check") == [("ok",)]


def hub_exactly_once(hub_db: Path, event_ids: Iterable[str], kind: str) -> int:
    """Each event id in the hub's ``events`` exactly once, with its effect applied once
    (for baskets: one purchase line each). Returns how many were found."""
    wanted = set(event_ids)
    found = Counter(r[0] for r in edge_rows(
        hub_db, "SELECT event_id FROM events WHERE kind = ?", kind))
    assert set(found) == wanted, (len(set(found) - wanted), len(wanted - set(found)))
    assert all(n == 1 for n in found.values())
    if kind == "pos_basket":
        lines = Counter(r[0] for r in edge_rows(hub_db, "SELECT event_id FROM purchases"))
        assert {e: n for e, n in lines.items() if e in wanted and n != 1} == {}
    return len(found)


# ---------------------------------------------------------------------- payloads


def new_id() -> str:
    return uuid.uuid4().hex


def basket(event_id: str, subject: str | None, product_id: str,
           ts: float | None = None) -> dict[str, Any]:
    """A one-line till basket whose basket id is its event id (so lines count per event)."""
    return {"v": 1, "event_id": event_id, "ts": time.time() if ts is None else ts,
            "basket_id": event_id, "subject": subject,
            "lines": [{"product_id": product_id, "quantity": 1, "unit_price": 2.5}]}


def staff_feedback(event_id: str, subject: str, product_id: str) -> dict[str, Any]:
    return {"v": 1, "event_id": event_id, "ts": time.time(), "subject": subject,
            "product_id": product_id, "action": "accepted", "channel": "staff"}
