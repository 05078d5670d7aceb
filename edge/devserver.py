"""Run a service for tests, benchmarks and demos: an ASGI app with uvicorn in a thread, or
the real command as a subprocess. Shared by the edge's and the hub's dev tools
(``edge.devtools``, ``hub.devtools``) so both start, wait and stop the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn

from edge.probe import wait_until
from edge.processes import stop_process


class ServerThread:
    """``app`` served by uvicorn on 127.0.0.1:``port`` in a background thread."""

    name = "http"

    def __init__(self, app: Any, port: int) -> None:
        self.port = port
        self.app = app
        # As storeside-edge: open live feeds (tablets, SSE) are cancelled 2 s into a stop
        # instead of holding it up until the join timeout.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            timeout_graceful_shutdown=2.0,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name=self.name, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        self._thread.start()
        wait_until(lambda: self.server.started or not self._thread.is_alive(), timeout)
        if not self.server.started:
            raise RuntimeError(f"{self.name} did not start (see log)")
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServiceProcess:
    """A real service command (``argv``) logging to ``log_path``, ready when
    ``GET url + ready_path`` answers 200; stopped with SIGTERM (or killed with SIGKILL)."""

    ready_path = "/readyz"

    def __init__(self, argv: Sequence[str], url: str, log_path: Path) -> None:
        self.argv = [sys.executable, *argv]
        self.url = url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_until(lambda: self.ready() or self.proc is None or self.proc.poll() is not None,
                   timeout, interval=0.05)
        if not self.ready():
            self.stop()
            raise RuntimeError(f"{self.argv[2:4]} did not become ready; log: {self.log_path}")
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200
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
        code = stop_process(self.proc, timeout)
        self.proc = None
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def toml_value(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def settings_toml(data: dict[str, Any]) -> str:
    """Settings (``model_dump(mode="json")``) as a TOML file (None omitted)."""
    flat = [f"{k} = {toml_value(v)}" for k, v in data.items()
            if v is not None and not isinstance(v, dict)]
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows = [f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None]
            tables.append(f"[{key}]\n" + "\n".join(rows))
    return "\n".join(flat) + "\n\n" + "\n\n".join(tables) + "\n"
