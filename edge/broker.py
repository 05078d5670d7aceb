"""A private Mosquitto on a free loopback port, for tests, benchmarks and the demo.

Never the system broker on 1883: each user of this gets its own process, its own
config (TCP_NODELAY on, no persistence unless asked) and stops it on exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from edge.processes import stop_process

logger = logging.getLogger(__name__)

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not come up."""


def find_mosquitto() -> str:
    for name in MOSQUITTO_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrokerError("mosquitto not found: install it (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


class PrivateBroker:
    """Start Mosquitto on 127.0.0.1:<free port>; stop it on ``close`` / context exit."""

    def __init__(
        self,
        port: int | None = None,
        extra_config: str = "",
        persistence_dir: Path | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._extra = extra_config
        self._persistence_dir = persistence_dir
        self._dir = Path(tempfile.mkdtemp(prefix="storeside-mosquitto-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self._dir / "mosquitto.conf"

    def _config_text(self) -> str:
        """The whole mosquitto.conf (``edge.broker_config.StoreBroker`` ships its own)."""
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if self._persistence_dir is not None:
            lines += ["persistence true", f"persistence_location {self._persistence_dir}/"]
            if os.geteuid() == 0:
                # Started as root, Mosquitto drops to user "mosquitto", which cannot write
                # into a root-owned temporary directory: persistence would silently be lost.
                lines.append("user root")
        else:
            lines.append("persistence false")
        return "\n".join(lines) + "\n" + self._extra

    def _write_config(self) -> None:
        self.config_path.write_text(self._config_text())

    def start(self, timeout: float = 10.0) -> PrivateBroker:
        self._write_config()
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the broker
        # Its own session: a Ctrl-C in the terminal reaches the services using the broker,
        # which then still need it to publish their "offline" status; whoever started the
        # broker stops it last (``close``).
        self._proc = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.config_path)], stdout=log, stderr=log,
            start_new_session=True,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except BrokerError:
            self.close()
            raise
        logger.info("private mosquitto on %s:%d (pid %d)", self.host, self.port, self._proc.pid)
        return self

    def close(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=5, kill_timeout=5)
        self._proc = None

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password file, ACL and certificates in place
        (credential rotation without a restart); the caller waits for the effect."""
        if self._proc is None:
            raise BrokerError("the broker is not running")
        self._proc.send_signal(signal.SIGHUP)

    @property
    def log_path(self) -> Path:
        return self._dir / "mosquitto.log"

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port (fault tests)."""
        self.close()
        self.start(timeout)

    def __enter__(self) -> PrivateBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        shutil.rmtree(self._dir, ignore_errors=True)
