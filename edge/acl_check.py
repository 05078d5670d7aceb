"""Prove a store broker's ACL with real clients: the expected matrix and the probe.

Used by ``tests/test_broker_acl.py`` (asserts observed == expected) and
``scripts/acl_matrix`` (prints the observed matrix as markdown). Every check is made
over TLS against the shipped config (``edge.broker_config.StoreBroker``).

How "denied" is shown without sleeping (Mosquitto 2.0.11):

* a forbidden **publish** (QoS 1) gets PUBACK 0x87 *Not authorized* and is dropped; an
  allowed writer then publishes a marker on the same topic, and every reader of that
  topic receives the marker but never the forbidden message (one broker thread, FIFO per
  connection: had it been routed, it would have arrived first);
* a forbidden **read**: 2.0.11 grants every SUBSCRIBE (SUBACK 0x01) and filters each
  message against the ACL at delivery. An allowed writer publishes; each reader
  connection then makes a SUBSCRIBE round trip, and anything routed to it before its
  SUBACK would have arrived before the SUBACK.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.topics import Topics

APP_A, APP_B = "app-a-0001", "app-b-0002"
PRINCIPALS = ("_storeside-edge", "_storeside-pos", "_storeside-staff", APP_A, APP_B)
SHORT = {"_storeside-edge": "edge", "_storeside-pos": "pos", "_storeside-staff": "staff",
         APP_A: "app A", APP_B: "app B"}


def topic_rows(t: Topics) -> dict[str, str]:
    """Label → topic: every topic of the tree, with apps A and B as the subjects."""
    rows = {f"in/app/A/{kind}": t.app(APP_A, kind)
            for kind in ("checkin", "geofence", "beacon", "feedback")}
    rows["in/app/B/checkin"] = t.app(APP_B, "checkin")
    rows["in/pos"] = t.pos
    rows["in/staff/feedback"] = t.staff_feedback
    rows["staff/recommendations"] = t.staff_recommendations
    rows["app/A/offers"] = t.app_offers(APP_A)
    rows["app/B/offers"] = t.app_offers(APP_B)
    rows["status"] = t.status
    rows["deadletter"] = t.dead_letters
    return rows


_E, _P, _S, _A, _B = PRINCIPALS
# label → (writers, readers): what deploy/mosquitto/store.acl must allow, nothing more.
EXPECTED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "in/app/A/checkin": (frozenset({_A}), frozenset({_E})),
    "in/app/A/geofence": (frozenset({_A}), frozenset({_E})),
    "in/app/A/beacon": (frozenset({_A}), frozenset({_E})),
    "in/app/A/feedback": (frozenset({_A}), frozenset({_E})),
    "in/app/B/checkin": (frozenset({_B}), frozenset({_E})),
    "in/pos": (frozenset({_P}), frozenset({_E})),
    "in/staff/feedback": (frozenset({_S}), frozenset({_E})),
    "staff/recommendations": (frozenset({_E}), frozenset({_S})),
    "app/A/offers": (frozenset({_E}), frozenset({_A})),
    "app/B/offers": (frozenset({_E}), frozenset({_B})),
    # a pattern applies to every user: any client that logged in may read the status
    "status": (frozenset({_E}), frozenset(PRINCIPALS)),
    "deadletter": (frozenset({_E}), frozenset()),
}


class AclClient:
    """One MQTT 5 connection over TLS that records reason codes and deliveries."""

    def __init__(self, host: str, port: int, ca_file: str, username: str | None,
                 password: str | None, tls: bool = True) -> None:
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.closed = False
        self.acks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"acl-{uuid.uuid4().hex[:12]}",
                                  protocol=mqtt.MQTTv5)
        if tls:
            context = ssl.create_default_context(cafile=ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.client.tls_set_context(context)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.host, self.port = host, port

    def _notify(self, fn: Any) -> None:
        with self.cond:
            fn()
            self.cond.notify_all()

    def _on_connect(self, c: Any, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        self._notify(lambda: setattr(self, "connack", rc))

    def _on_disconnect(self, c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
        self._notify(lambda: setattr(self, "closed", True))

    def _on_publish(self, c: Any, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        self._notify(lambda: self.acks.__setitem__(mid, rc))

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: list[ReasonCode], p: Any) -> None:
        self._notify(lambda: self.subacks.__setitem__(mid, rcs))

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        self._notify(lambda: self.messages.append((msg.topic, bytes(msg.payload))))

    def wait(self, predicate: Any, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("condition not met")
                self.cond.wait(remaining)
            return value

    def connect(self, timeout: float = 5.0) -> str:
        """CONNACK reason name, or "no CONNACK" when the link closed without one."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            return f"no CONNACK ({type(exc).__name__})"
        self.client.loop_start()
        try:
            self.wait(lambda: self.connack is not None or self.closed, timeout)
        except TimeoutError:
            return "no CONNACK (timeout)"
        return self.connack.getName() if self.connack is not None else "no CONNACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> str:
        """PUBACK reason name (QoS 1)."""
        info = self.client.publish(topic, payload, qos=qos)
        return str(self.wait(lambda: self.acks.get(info.mid)).getName())

    def subscribe(self, *filters: str) -> list[str]:
        _, mid = self.client.subscribe([(f, 1) for f in filters])
        if mid is None:
            raise ConnectionError("not connected")
        return [rc.getName() for rc in self.wait(lambda: self.subacks.get(mid))]

    def sync(self) -> None:
        """A SUBSCRIBE round trip: everything routed to us before it has arrived."""
        self.subscribe(f"storeside/sync/{uuid.uuid4().hex}")

    def got(self, payload: bytes) -> bool:
        with self.cond:
            return any(p == payload for _, p in self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Observed:
    """What the broker did: label → (writers it accepted, readers it delivered to)."""

    writes: dict[str, set[str]] = field(default_factory=dict)
    reads: dict[str, set[str]] = field(default_factory=dict)
    puback: dict[tuple[str, str], str] = field(default_factory=dict)
    subacks: set[str] = field(default_factory=set)
    undelivered: list[tuple[str, str]] = field(default_factory=list)  # accepted, not read

    def as_expected(self) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
        return {label: (frozenset(self.writes[label]), frozenset(self.reads[label]))
                for label in self.writes}


def probe_matrix(host: str, port: int, ca_file: str, passwords: Mapping[str, str],
                 topics: Topics) -> Observed:
    """Every principal × every topic × publish/subscribe, as described above."""
    rows = topic_rows(topics)
    actors = {p: AclClient(host, port, ca_file, p, passwords[p]) for p in PRINCIPALS}
    readers = {p: AclClient(host, port, ca_file, p, passwords[p]) for p in PRINCIPALS}
    observed = Observed()
    try:
        for client in [*actors.values(), *readers.values()]:
            if (rc := client.connect()) != "Success":
                raise RuntimeError(f"connect refused: {rc}")
        for reader in readers.values():
            observed.subacks.update(reader.subscribe(*rows.values()))
        for label, topic in rows.items():
            writer = actors[next(iter(EXPECTED[label][0]))]  # an allowed writer: markers
            observed.writes[label] = set()
            for principal, actor in actors.items():
                tag = f"w|{principal}|{label}|{uuid.uuid4().hex}".encode()
                rc = actor.publish(topic, tag)
                observed.puback[(principal, label)] = rc
                marker = f"m|{uuid.uuid4().hex}".encode()
                if writer.publish(topic, marker) != "Success":
                    raise RuntimeError(f"the marker on {label} was refused")
                got_tag = set()
                for name, reader in readers.items():
                    reader.sync()
                    if reader.got(tag):
                        got_tag.add(name)
                    if name in EXPECTED[label][1] and not reader.got(marker):
                        raise RuntimeError(f"{name} did not receive the marker on {label}")
                if rc == "Success" or got_tag:
                    observed.writes[label].add(principal)
                if rc == "Success" and got_tag != EXPECTED[label][1]:
                    observed.undelivered.append((principal, label))
            # reads: one publish by an allowed writer, then who got it
            tag = f"r|{label}|{uuid.uuid4().hex}".encode()
            if writer.publish(topic, tag) != "Success":
                raise RuntimeError(f"the probe on {label} was refused")
            observed.reads[label] = set()
            for principal, reader in readers.items():
                reader.sync()
                if reader.got(tag):
                    observed.reads[label].add(principal)
    finally:
        for client in [*actors.values(), *readers.values()]:
            client.close()
    return observed


def render_markdown(matrix: Mapping[str, tuple[frozenset[str], frozenset[str]]]) -> str:
    """The matrix as a markdown table: W = may publish, R = receives, — = neither."""
    head = "| topic (`<p>/…`) | " + " | ".join(SHORT[p] for p in PRINCIPALS) + " |"
    lines = [head, "|---" * (len(PRINCIPALS) + 1) + "|"]
    for label, (writers, readers) in matrix.items():
        cells = []
        for p in PRINCIPALS:
            cell = ("W" if p in writers else "") + ("R" if p in readers else "")
            cells.append(cell or "—")
        lines.append(f"| `{label}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
