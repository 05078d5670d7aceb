"""The demo as a newcomer runs it: recommendations flow, Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.probe import MqttProbe, wait_until

REPO = Path(__file__).resolve().parent.parent
STAFF_TOPIC = "storeside/demo/demo-001/staff/recommendations"


def session_pids(sid: int) -> set[int]:
    """Every live process in session ``sid`` (the demo runs as a session leader here)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


@dataclass
class DemoRun:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        try:
            match: re.Match[str] = wait_until(lambda: self.find(pattern), timeout, 0.05)
        except TimeoutError:
            shown = "\n".join(self.lines[-40:])
            raise AssertionError(f"{pattern!r} not printed; output:\n{shown}") from None
        return match


@pytest.fixture()
def start_demo(tmp_path: Path) -> Iterator[Callable[..., DemoRun]]:
    """Start ``python -m edge.demo`` as a terminal would (its own process group); kill
    whatever is left of every started demo afterwards, even when the test failed."""
    runs: list[DemoRun] = []

    def start(*extra: str) -> DemoRun:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.demo", "--workdir", str(tmp_path / "demo"),
             "--http-port", "0", "--speed", "300", "--duration", "45", *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        run = DemoRun(proc)
        threading.Thread(target=run.read, daemon=True).start()
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait(10)
        for pid in session_pids(run.proc.pid):
            os.kill(pid, signal.SIGKILL)


def broker_listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _running_demo(run: DemoRun) -> tuple[str, int]:
    """Wait for the banner; return (edge URL, broker port)."""
    status = run.wait_for(r"Edge status\s+(http://127\.0\.0\.1:\d+)/v1/status", 60)
    broker = run.wait_for(r"MQTT\s+127\.0\.0\.1:(\d+)", 5)
    return status.group(1), int(broker.group(1))


def test_recommendations_flow_and_ctrl_c_stops_everything(
    start_demo: Callable[..., DemoRun], tmp_path: Path
) -> None:
    demo = start_demo()
    url, broker_port = _running_demo(demo)
    children = session_pids(demo.proc.pid) - {demo.proc.pid}
    assert len(children) >= 2  # the edge, the simulator (mosquitto has a session of its own)
    assert broker_listening(broker_port)
    with MqttProbe("127.0.0.1", broker_port, [STAFF_TOPIC]) as staff:
        card = staff.wait_for(lambda r: isinstance(r.payload, dict), 30).payload
    assert card["suggestions"] and card["source"] == "model"
    assert re.fullmatch(r"m-[0-9a-f]{16}", card["subject"])
    demo.wait_for(r"^\d\d:\d\d  (checkin|zone_dwell|refresh)", 10)  # the terminal ticker
    status = httpx.get(f"{url}/v1/status", timeout=5).json()
    assert status["mqtt_connected"] and status["state"] == "online"
    tablet = demo.find(r"Staff tablet\s+(\S+)")
    assert tablet is not None and "/tablet/pair?code=" in tablet.group(1)
    assert "sst_" not in "\n".join(demo.lines)  # no device token on the screen
    # the one-time link pairs one browser (device cookie, then the page), and only one
    answer = httpx.get(tablet.group(1), timeout=5, follow_redirects=False)
    assert answer.status_code == 303 and "httponly" in answer.headers["set-cookie"].lower()
    assert httpx.get(tablet.group(1), timeout=5).status_code == 410
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert 'storeside_recommendations_total{channel="staff",source="model"}' in metrics
    dead = re.findall(r"^storeside_dead_letters_total\{.*\} (\S+)$", metrics, re.M)
    assert all(float(value) == 0 for value in dead)  # every simulated event was valid

    os.killpg(demo.proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole job
    assert demo.proc.wait(30) == 0
    wait_until(lambda: not session_pids(demo.proc.pid), 10)
    wait_until(lambda: not broker_listening(broker_port), 10)  # stopped last, by the demo
    assert demo.wait_for(r"-- demo stopped: (\d+) staff recommendations", 5)
    edge_log = (tmp_path / "demo" / "edge.log").read_text()
    assert "Application shutdown complete" in edge_log  # graceful: drained, SQLite closed
    assert "Traceback" not in edge_log
    # the broker outlived the edge, so the edge could say goodbye on its status topic
    assert "mqtt connection lost" not in edge_log
    assert "offline status not confirmed" not in edge_log


def test_sigterm_to_the_demo_alone_stops_its_children_not_a_shared_broker(
    start_demo: Callable[..., DemoRun], broker: PrivateBroker
) -> None:
    with MqttProbe(broker.host, broker.port, [STAFF_TOPIC]) as staff:
        demo = start_demo("--quiet", "--broker", f"127.0.0.1:{broker.port}")
        _url, port = _running_demo(demo)
        assert port == broker.port
        staff.wait_for(lambda r: isinstance(r.payload, dict), 30)
    children = session_pids(demo.proc.pid) - {demo.proc.pid}
    assert len(children) == 2  # the edge and the simulator: no broker of its own
    demo.proc.send_signal(signal.SIGTERM)  # to the orchestrator only
    assert demo.proc.wait(30) == 0
    wait_until(lambda: not session_pids(demo.proc.pid), 10)
    with MqttProbe(broker.host, broker.port):  # the shared broker still runs
        pass
