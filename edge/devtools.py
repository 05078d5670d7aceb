"""Tools to run and watch an edge from Python: tests, benchmarks and the demo share them.

``EmbeddedEdge`` serves ``create_app`` with a real uvicorn server on a loopback port in a
background thread; ``MqttProbe`` is a plain paho client that records what the edge
publishes and lets a caller wait for a condition instead of sleeping.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
import uvicorn

from edge.app import create_app
from edge.broker import free_port
from edge.settings import EdgeSettings


class EmbeddedEdge:
    """An edge app served by uvicorn on 127.0.0.1:<free port>, stopped on exit."""

    def __init__(self, settings: EdgeSettings, **app_kwargs: Any) -> None:
        self.port = settings.http.port or free_port()
        self.settings = settings
        self.app = create_app(settings, **app_kwargs)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="edge-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def start(self, timeout: float = 30.0) -> EmbeddedEdge:
        self._thread.start()
        wait_until(lambda: self.server.started or not self._thread.is_alive(), timeout)
        if not self.server.started:
            raise RuntimeError("edge did not start (see log)")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> EmbeddedEdge:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until truthy; return its value or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


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
        try:
            payload: Any = json.loads(msg.payload)
        except ValueError:
            payload = msg.payload
        item = Received(msg.topic, payload, time.perf_counter())
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

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: Any, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes | str) else json.dumps(payload)
        self.client.publish(topic, data, qos=qos)

    def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float = 5.0
    ) -> Received:
        """First received message matching ``predicate`` (already received counts)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.received:
                    if predicate(item):
                        return item
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no matching message received")
                self._cond.wait(remaining)

    def matching(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self._cond:
            return [item for item in self.received if predicate(item)]

    def __enter__(self) -> MqttProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
