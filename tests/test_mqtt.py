"""The MQTT bridge against a real Mosquitto: delivery, sessions, acks, will, dead letters."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edge.broker import PrivateBroker, free_port
from edge.dispatch import Dispatcher
from edge.messages import Inbound
from edge.metrics import EdgeMetrics
from edge.mqtt import MqttBridge, MqttConnectError
from edge.probe import wait_for_item, wait_until
from edge.topics import Topics

REPO = Path(__file__).resolve().parent.parent
TS = 1_780_000_000.0
SUBJECT = "cust-001"


# ------------------------------------------------------------------- helpers



def sample(metrics: EdgeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Client:
    """A plain MQTT 5 client playing an app, a till or a tablet; records what it gets."""

    def __init__(self, broker: PrivateBroker, subscribe: tuple[str, ...] = ()) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._ready = threading.Event()
        self._subscribe = subscribe
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"t-{uuid.uuid4().hex[:10]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(5):
            raise TimeoutError("test client did not connect")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._subscribe:
            client.subscribe([(t, 1) for t in self._subscribe])
        else:
            self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def send(self, topic: str, payload: dict[str, Any] | bytes, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=qos)
        if qos:
            info.wait_for_publish(5)

    def wait_for(self, predicate: Callable[[mqtt.MQTTMessage], bool],
                 timeout: float = 5.0) -> mqtt.MQTTMessage:
        return wait_for_item(self._cond, self.messages, predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def status_is(state: str, **fields: Any) -> Callable[[mqtt.MQTTMessage], bool]:
    def check(msg: mqtt.MQTTMessage) -> bool:
        body = json.loads(msg.payload)
        return body["state"] == state and all(body.get(k) == v for k, v in fields.items())
    return check


def geofence(event_id: str, subject: str = SUBJECT) -> dict[str, Any]:
    return {"v": 1, "event_id": event_id, "ts": TS, "subject": subject, "transition": "enter"}


def beacon(event_id: str) -> dict[str, Any]:
    return {"v": 1, "event_id": event_id, "ts": TS, "subject": SUBJECT, "zone": "dairy",
            "beacon_id": "b1", "rssi": -60}


class Edge:
    """Bridge + dispatcher wired the way the service wires them."""

    def __init__(self, broker: PrivateBroker, topics: Topics, *, client_id: str | None = None,
                 handlers: dict[str, Callable[[Any], Any]] | None = None,
                 queue_size: int = 1_000, start_worker: bool = True,
                 manual: bool = False) -> None:
        self.metrics = EdgeMetrics()
        self.handled: list[Any] = []
        self.seen: list[Inbound] = []
        kinds = ("checkin", "geofence", "beacon", "pos", "feedback")
        self.dispatcher = Dispatcher(
            handlers or {k: self.handled.append for k in kinds},
            metrics=self.metrics, queue_size=queue_size, reserved=queue_size // 2,
        )
        self.bridge = MqttBridge(
            host=broker.host, port=broker.port,
            client_id=client_id or f"edge-{uuid.uuid4().hex[:10]}",
            topics=topics, metrics=self.metrics, on_inbound=self._consume,
            queue_size=queue_size, reconnect_min_s=0.1, reconnect_max_s=1,
        )
        self.manual = manual
        self.dispatcher.on_done = None if manual else self.bridge.ack
        self.dispatcher.on_dead_letter = self.bridge.publish_dead_letter
        if start_worker:
            self.dispatcher.start()
        self.bridge.start(timeout=5)

    def _consume(self, inbound: Inbound) -> bool:
        self.seen.append(inbound)
        return True if self.manual else self.dispatcher.offer(inbound)

    def close(self) -> None:
        self.dispatcher.stop(drain=False)
        self.bridge.stop()


@pytest.fixture()
def topics() -> Topics:
    return Topics(f"t{uuid.uuid4().hex[:8]}", "s1")


@pytest.fixture()
def clients(broker: PrivateBroker) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(*subscribe: str) -> Client:
        made.append(Client(broker, subscribe))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture()
def edges(broker: PrivateBroker) -> Iterator[Callable[..., Edge]]:
    made: list[Edge] = []

    def make(topics: Topics, on: PrivateBroker = broker, **kwargs: Any) -> Edge:
        made.append(Edge(on, topics, **kwargs))
        return made[-1]

    yield make
    for edge in made:
        edge.close()


# ------------------------------------------------------------------- against the broker


def test_every_inbound_kind_reaches_the_worker_and_the_edge_says_online(
    topics: Topics, edges: Callable[..., Edge], clients: Callable[..., Client]
) -> None:
    edge = edges(topics)
    app, till = clients(), clients()
    app.send(topics.checkin(SUBJECT), {"v": 1, "event_id": "ck", "ts": TS,
                                       "token": "aaaaaaaa.bbbbbbbb.cccccccc"})
    app.send(topics.geofence(SUBJECT), geofence("gf"))
    app.send(topics.beacon(SUBJECT), beacon("bc"), qos=1)  # downgraded to QoS 0
    app.send(topics.feedback(SUBJECT), {"v": 1, "event_id": "fa", "ts": TS, "subject": SUBJECT,
                                        "product_id": "p1", "action": "accepted",
                                        "channel": "app"})
    till.send(topics.pos, {"v": 1, "event_id": "pos", "ts": TS, "basket_id": "b1",
                           "lines": [{"product_id": "p1", "quantity": 1}]})
    till.send(topics.feedback(), {"v": 1, "event_id": "fs", "ts": TS, "subject": SUBJECT,
                                  "product_id": "p1", "action": "dismissed",
                                  "channel": "staff"})
    wait_until(lambda: len(edge.handled) == 6)
    assert {m.event_id for m in edge.handled} == {"ck", "gf", "bc", "fa", "pos", "fs"}
    checkin = next(m for m in edge.handled if m.event_id == "ck")
    assert checkin.subject == SUBJECT  # filled from the topic for the token check
    qos = {i.kind + (i.subject or ""): i.qos for i in edge.seen}
    assert qos == {"checkincust-001": 1, "geofencecust-001": 1, "beaconcust-001": 0,
                   "feedbackcust-001": 1, "pos": 1, "feedback": 1}
    assert sample(edge.metrics, "storeside_mqtt_connected") == 1
    sock = edge.bridge._client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    tablet = clients(topics.status)  # a late subscriber still gets the retained status
    msg = tablet.wait_for(status_is("online", client_id=edge.bridge.client_id))
    assert msg.retain


def test_a_killed_edge_is_marked_offline_by_its_last_will(
    broker: PrivateBroker, topics: Topics, clients: Callable[..., Client]
) -> None:
    tablet = clients(topics.status)
    child = (
        "import sys, threading\n"
        "from edge.metrics import EdgeMetrics\n"
        "from edge.mqtt import MqttBridge\n"
        "from edge.topics import Topics\n"
        "b = MqttBridge(host=sys.argv[1], port=int(sys.argv[2]), client_id=sys.argv[3],\n"
        "               topics=Topics(sys.argv[4]), on_inbound=lambda i: True,\n"
        "               metrics=EdgeMetrics(), status_fields=lambda: {'model_version': 'm7'})\n"
        "b.start()\n"
        "print('up', flush=True)\n"
        "threading.Event().wait()\n"
    )
    client_id = f"edge-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", child, broker.host, str(broker.port), client_id, topics.prefix],
        cwd=REPO, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        tablet.wait_for(status_is("online", client_id=client_id, model_version="m7"))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        will = tablet.wait_for(status_is("offline", reason="connection_lost"))
        assert json.loads(will.payload)["client_id"] == client_id
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    late = clients(topics.status)
    assert late.wait_for(status_is("offline")).retain


def test_qos1_events_sent_while_the_edge_is_down_arrive_after_restart(
    topics: Topics, edges: Callable[..., Edge], clients: Callable[..., Client]
) -> None:
    tablet = clients(topics.status)
    first = edges(topics, client_id="edge-persist-" + topics.prefix.split("/")[1])
    first.close()
    tablet.wait_for(status_is("offline", reason="shutdown"))
    app = clients()
    for i in range(3):
        app.send(topics.geofence(SUBJECT), geofence(f"while-down-{i}"))
    second = edges(topics, client_id="edge-persist-" + topics.prefix.split("/")[1])
    wait_until(lambda: len(second.handled) == 3)
    assert [m.event_id for m in second.handled] == [f"while-down-{i}" for i in range(3)]


def _drop_connection(edge: Edge) -> None:
    """Cut the TCP connection under paho, as a flaky network would."""
    session = edge.bridge._session
    edge.bridge._client.socket().shutdown(socket.SHUT_RDWR)
    wait_until(lambda: edge.bridge._session > session and edge.bridge.connected)


def _flush(edge: Edge) -> None:
    """Round trip on the bridge's connection: once our own QoS 1 publish is acked, the
    broker has also read every PUBACK queued before it (one ordered TCP stream)."""
    info = edge.bridge._client.publish(edge.bridge.topics.dead_letters, b"sync", qos=1)
    info.wait_for_publish(5)


def test_acks_are_withheld_until_ack_and_unacked_messages_come_back(
    topics: Topics, edges: Callable[..., Edge], clients: Callable[..., Client]
) -> None:
    edge = edges(topics, manual=True, start_worker=False)  # nobody acks on its own
    app = clients()
    app.send(topics.geofence(SUBJECT), geofence("m1"))
    wait_until(lambda: len(edge.seen) == 1)
    _drop_connection(edge)
    # Not acked → the broker resends it on the resumed session.
    again = wait_until(lambda: [i for i in edge.seen[1:] if b'"m1"' in i.payload])
    assert again[0].dup and again[0].mid == edge.seen[0].mid
    edge.bridge.ack(edge.seen[0])  # stale connection: must not be sent
    edge.bridge.ack(again[0])
    app.send(topics.geofence(SUBJECT), geofence("m2"))
    m2 = wait_until(lambda: [i for i in edge.seen if b'"m2"' in i.payload])
    edge.bridge.ack(m2[0])
    _flush(edge)  # an ack still in our socket buffer when the link dies is lost (by design)
    _drop_connection(edge)
    app.send(topics.geofence(SUBJECT), geofence("m3"))
    wait_until(lambda: any(b'"m3"' in i.payload for i in edge.seen))
    ids = [json.loads(i.payload)["event_id"] for i in edge.seen]
    assert ids == ["m1", "m1", "m2", "m3"]  # acked ones were not redelivered


def test_receive_maximum_caps_unacked_messages_in_flight(
    topics: Topics, edges: Callable[..., Edge], clients: Callable[..., Client]
) -> None:
    edge = edges(topics, queue_size=4, manual=True, start_worker=False)
    assert edge.bridge.receive_maximum == 2
    app = clients()
    for i in range(5):
        app.send(topics.geofence(SUBJECT), geofence(f"q{i}"))
    app.send(topics.beacon(SUBJECT), beacon("marker"), qos=0)  # QoS 0 is not capped

    def qos1() -> list[Inbound]:
        return [i for i in edge.seen if i.qos == 1]

    wait_until(lambda: any(i.kind == "beacon" for i in edge.seen))
    assert len(qos1()) == 2  # the broker holds the rest until we ack
    # Mosquitto 2.0.11 widens the window after acks (two messages per PUBACK), so only
    # the first window is asserted; the dispatcher's hard limit covers the overshoot.
    acked: set[int] = set()
    while len(qos1()) < 5:
        for inbound in [i for i in qos1() if i.mid not in acked]:
            acked.add(inbound.mid)
            edge.bridge.ack(inbound)
        done = len(acked)
        wait_until(lambda done=done: len(qos1()) > done or len(qos1()) == 5)
    assert [json.loads(i.payload)["event_id"] for i in qos1()] == [f"q{i}" for i in range(5)]


def test_malformed_payloads_are_counted_dead_letters_and_the_worker_goes_on(
    topics: Topics, edges: Callable[..., Edge], clients: Callable[..., Client]
) -> None:
    edge = edges(topics)
    ops = clients(topics.dead_letters)
    app = clients()
    bad = {
        "bad_json": b'{"v": 1, "event_id": ',
        "invalid": json.dumps({**geofence("types"), "ts": "yesterday"}).encode(),
        "schema_version": json.dumps({**geofence("future"), "v": 2}).encode(),
        "too_large": json.dumps({**geofence("big"), "pad": "x" * 20_000}).encode(),
        "bad_utf8": b'{"v": 1, "subject": "\xff\xfe"}',
        "subject_mismatch": json.dumps(geofence("spoof", subject="cust-002")).encode(),
    }
    for payload in bad.values():
        app.send(topics.geofence(SUBJECT), payload)
    app.send(topics.geofence(SUBJECT), geofence("valid-after"))
    wait_until(lambda: [m.event_id for m in edge.handled] == ["valid-after"])
    for reason in bad:
        assert sample(edge.metrics, "storeside_dead_letters_total", kind="geofence",
                      reason=reason) == 1, reason
        record = json.loads(ops.wait_for(
            lambda m, r=reason: json.loads(m.payload)["reason"] == r).payload)
        assert record["topic"] == topics.geofence(SUBJECT) and "pad" not in json.dumps(record)
    assert edge.dispatcher.running and edge.dispatcher.depth == 0


def test_qos0_beyond_the_queue_is_dropped_and_counted_qos1_still_fits(
    topics: Topics, edges: Callable[..., Edge], clients: Callable[..., Client]
) -> None:
    edge = edges(topics, queue_size=20, start_worker=False)  # 10 lossy + 10 reserved
    assert edge.bridge.receive_maximum == 10
    app = clients()
    for i in range(25):
        app.send(topics.beacon(SUBJECT), beacon(f"b{i}"), qos=0)
    received = ("storeside_messages_received_total", {"kind": "beacon"})
    wait_until(lambda: sample(edge.metrics, received[0], **received[1]) == 25)
    assert sample(edge.metrics, "storeside_queue_dropped_total", kind="beacon") == 15
    app.send(topics.geofence(SUBJECT), geofence("g-after-flood"))
    wait_until(lambda: edge.dispatcher.depth == 11)
    edge.dispatcher.start()
    wait_until(lambda: len(edge.handled) == 11)
    # QoS 1 events have a lane of their own ahead of beacons (edge.dispatch)
    assert [m.event_id for m in edge.handled] == ["g-after-flood"] + [f"b{i}" for i in range(10)]


def test_the_bridge_resubscribes_after_a_broker_restart(
    fresh_broker: PrivateBroker, topics: Topics, edges: Callable[..., Edge]
) -> None:
    edge = edges(topics, on=fresh_broker)
    fresh_broker.restart()  # no persistence: the session is gone, subscriptions too
    wait_until(lambda: edge.bridge._session == 2 and edge.bridge.connected, timeout=10)
    app = Client(fresh_broker)
    try:
        app.send(topics.geofence(SUBJECT), geofence("after-restart"))
        wait_until(lambda: [m.event_id for m in edge.handled] == ["after-restart"])
    finally:
        app.close()
    assert sample(edge.metrics, "storeside_mqtt_disconnects_total") >= 1


@pytest.fixture()
def empty_password_file() -> Iterator[Path]:
    """World-readable: Mosquitto started as root reads it after dropping privileges."""
    directory = Path(tempfile.mkdtemp(prefix="storeside-pw-"))
    directory.chmod(0o755)
    passwords = directory / "passwd"
    passwords.write_text("")
    passwords.chmod(0o644)
    yield passwords
    shutil.rmtree(directory, ignore_errors=True)


def test_a_refused_connack_fails_start_loudly(empty_password_file: Path, topics: Topics) -> None:
    with PrivateBroker(extra_config=f"password_file {empty_password_file}\n") as strict:
        metrics = EdgeMetrics()
        bridge = MqttBridge(host=strict.host, port=strict.port, client_id="edge-refused",
                            topics=topics, metrics=metrics, on_inbound=lambda i: True,
                            username="edge", password="wrong")
        with pytest.raises(MqttConnectError, match="CONNACK refused"):
            bridge.start(timeout=5)
        assert sample(metrics, "storeside_mqtt_connect_failures_total",
                      reason="not_authorized") == 1
        assert not bridge.connected


def test_an_unreachable_broker_times_out(topics: Topics) -> None:
    metrics = EdgeMetrics()
    bridge = MqttBridge(host="127.0.0.1", port=free_port(), client_id="edge-nowhere",
                        topics=topics, metrics=metrics, on_inbound=lambda i: True,
                        reconnect_min_s=0.1, reconnect_max_s=0.2)
    with pytest.raises(TimeoutError):
        bridge.start(timeout=0.5)
    assert sample(metrics, "storeside_mqtt_connect_failures_total", reason="unreachable") >= 1


def test_bench_mqtt_hop_smoke() -> None:
    """The benchmark runs and its last line is the JSON the report quotes."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_mqtt_hop"), "--quick"],
        capture_output=True, text=True, timeout=120, check=True, cwd=REPO,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["hop_samples"] == 200 and 0 < result["hop_p50_ms"] <= result["hop_p99_ms"]
    assert result["qos0_steps"][0]["lost"] == 0 and result["qos0_max_rate_0_loss"] > 0
