"""A plain MQTT client that records what it receives: tests, benchmarks, the simulator.

Deliberately light (paho only, no app import) so transport tests can use it too. Callers
wait on a condition (``wait_for``, ``wait_until``) instead of sleeping.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as mqtt

T = TypeVar("T")


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_for_item(
    cond: threading.Condition, items: list[T], predicate: Callable[[T], bool], timeout: float
) -> T:
    """First of ``items`` matching ``predicate``, waiting on ``cond`` (notified by whoever
    appends to ``items`` under it) up to ``timeout`` s; TimeoutError if none arrives."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            for item in items:
                if predicate(item):
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching message received")
            cond.wait(remaining)


@dataclass
class Received:
    topic: str
    payload: Any
    at: float  # perf_counter when received


@dataclass
class MqttProbe:
    """A test/benchmark client: publishes JSON, records everything it receives."""

    host: str
    port: int
    subscriptions: list[str] = field(default_factory=list)
    client_id: str = ""
    on_receive: Callable[[Received], None] | None = None
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._pending: list[mqtt.MQTTMessageInfo] = []
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id or f"probe-{time.monotonic_ns()}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any,
                    props: Any = None) -> None:
        sock = client.socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.subscriptions:
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        else:
            self._subscribed.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      props: Any = None) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        at = time.perf_counter()  # arrival, before decoding (a 2 KB card takes ~20 us)
        try:
            payload: Any = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        item = Received(msg.topic, payload, at)
        if self.on_receive is not None:
            self.on_receive(item)
        with self._cond:
            self.received.append(item)
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> MqttProbe:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            raise TimeoutError("probe did not connect/subscribe")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Disconnect after everything published so far reached the broker."""
        self.flush(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def flush(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for info in self._pending:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        self._pending.clear()

    def publish(self, topic: str, payload: Any, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        info = self.client.publish(topic, data, qos=qos)
        if qos > 0:
            self._pending.append(info)

    def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float = 5.0
    ) -> Received:
        """First received message matching ``predicate`` (already received counts)."""
        return wait_for_item(self._cond, self.received, predicate, timeout)

    def matching(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self._cond:
            return [item for item in self.received if predicate(item)]

    def __enter__(self) -> MqttProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
