"""Tools to run an edge from Python: tests, benchmarks and the demo share them.

``EmbeddedEdge`` serves ``create_app`` with a real uvicorn server on a loopback port in a
background thread; ``EdgeProcess`` runs the real ``storeside-edge`` command. To watch
what an edge publishes, use ``edge.probe.MqttProbe``. (The hub has the same pair in
``hub.devtools``; both build on ``edge.devserver``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.app import create_app
from edge.broker import free_port
from edge.devserver import ServerThread, ServiceProcess
from edge.devserver import settings_toml as _settings_toml
from edge.probe import MqttProbe, Received, wait_until
from edge.settings import EdgeSettings

__all__ = ["EdgeProcess", "EmbeddedEdge", "MqttProbe", "Received", "settings_toml", "wait_until"]


class EmbeddedEdge(ServerThread):
    """An edge app served by uvicorn on 127.0.0.1:<free port>, stopped on exit."""

    name = "edge-http"

    def __init__(self, settings: EdgeSettings, **app_kwargs: Any) -> None:
        self.settings = settings
        super().__init__(create_app(settings, **app_kwargs), settings.http.port or free_port())

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


def settings_toml(settings: EdgeSettings) -> str:
    """The settings as a TOML file ``storeside-edge --config`` accepts (None omitted)."""
    return _settings_toml(settings.model_dump(mode="json"))


class EdgeProcess(ServiceProcess):
    """A real ``storeside-edge`` process (for kill -9 tests and benchmarks)."""

    def __init__(self, settings: EdgeSettings, workdir: Path, log_level: str = "WARNING") -> None:
        if not settings.http.port:
            settings = settings.model_copy(
                update={"http": settings.http.model_copy(update={"port": free_port()})}
            )
        self.settings = settings
        self.config = workdir / "edge.toml"
        self.config.write_text(settings_toml(settings))
        self.log_level = log_level
        super().__init__(
            ["-m", "edge.cli", "--config", str(self.config), "--log-level", log_level],
            f"http://127.0.0.1:{settings.http.port}", workdir / "edge.log",
        )
