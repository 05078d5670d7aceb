"""Tools to run and watch an edge from Python: tests, benchmarks and the demo share them.

``EmbeddedEdge`` serves ``create_app`` with a real uvicorn server on a loopback port in a
background thread; ``MqttProbe`` is a plain paho client that records what the edge
publishes and lets a caller wait for a condition instead of sleeping.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def settings_toml(settings: EdgeSettings) -> str:
    """The settings as a TOML file ``storeside-edge --config`` accepts (None omitted)."""
    data = settings.model_dump(mode="json")
    flat = [f"{k} = {_toml_value(v)}" for k, v in data.items()
            if v is not None and not isinstance(v, dict)]
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows = [f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None]
            tables.append(f"[{key}]\n" + "\n".join(rows))
    return "\n".join(flat) + "\n\n" + "\n\n".join(tables) + "\n"


class EdgeProcess:
    """A real ``storeside-edge`` process (for kill -9 tests and benchmarks)."""

    def __init__(self, settings: EdgeSettings, workdir: Path, log_level: str = "WARNING") -> None:
        if not settings.http.port:
            settings = settings.model_copy(
                update={"http": settings.http.model_copy(update={"port": free_port()})}
            )
        self.settings = settings
        self.config = workdir / "edge.toml"
        self.config.write_text(settings_toml(settings))
        self.log_path = workdir / "edge.log"
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> EdgeProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "--config", str(self.config),
             "--log-level", self.log_level],
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(lambda: self.ready() or self.proc is None or self.proc.poll() is not None,
                   timeout, interval=0.05)
        if not self.ready():
            self.stop()
            raise RuntimeError(f"edge did not become ready; log: {self.log_path}")
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a power cut of the process."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait: the graceful path systemd uses."""
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.proc = None
        return code

    def __enter__(self) -> EdgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
