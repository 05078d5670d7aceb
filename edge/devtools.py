"""Tools to run an edge from Python: tests, benchmarks and the demo share them.

``EmbeddedEdge`` serves ``create_app`` with a real uvicorn server on a loopback port in a
background thread; ``EdgeProcess`` runs the real ``storeside-edge`` command. To watch
what an edge publishes, use ``edge.probe.MqttProbe``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from edge.app import create_app
from edge.broker import free_port
from edge.probe import MqttProbe, Received, wait_until
from edge.settings import EdgeSettings

__all__ = ["EdgeProcess", "EmbeddedEdge", "MqttProbe", "Received", "wait_until"]


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
