"""``python -m edge.demo`` (what ``scripts/demo`` runs): a whole store on one machine.

Starts, in this order: a private Mosquitto on a free port (or uses ``--broker``), a fresh
check-in signing key, the demo store seeded into ``var/demo/edge.db``, a real
``storeside-edge`` process, a one-time pairing code for a staff tablet, and the simulator
playing a store day at ``--speed``. Then it prints the tablet's pairing link (the code,
never a device token: the browser that opens it gets its own) and a line per staff
recommendation until Ctrl-C (or ``--duration``), and stops everything it started, newest
first.

Why the visit timers are divided by the speed: the simulator compresses store time, the
edge measures dwell and exit grace on its own wall clock, so at 60× a 15 s dwell must be
0.25 s. Quiet hours are off and daily caps raised for the same reason (store days repeat
every 12 minutes; the wall clock's hour says nothing about the store's).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from edge.broker import PrivateBroker, free_port
from edge.demo_store import DEMO_STORE, generate_demo_store, load_demo_store
from edge.devices import create_pairing_code
from edge.devices_cli import pairing_link
from edge.devtools import EdgeProcess
from edge.pairing_codes import format_code
from edge.probe import MqttProbe, Received
from edge.rules import RulesConfig
from edge.settings import EdgeSettings, HttpSettings, MqttSettings, TokenSettings
from edge.sim_day import HOUR, OPEN_HOURS
from edge.simulator import parse_hostport, store_clock
from edge.store import EdgeStore
from edge.visit import VisitConfig
from hub.tokens import generate_signing_key, private_key_pem, public_key_pem

logger = logging.getLogger(__name__)

CHAIN, KID = "demo", "k1"
MARKER = ".storeside-demo"  # only a folder carrying it is wiped at start
PREFERRED_HTTP_PORT = 8080
PAIRING_TTL_S = 3600  # the demo's link: time to read the banner and find a browser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n")[0])
    parser.add_argument("--broker", type=parse_hostport,
                        help="use this MQTT broker (host:port) instead of a private one")
    parser.add_argument("--http-port", type=int,
                        help=f"edge HTTP port (default {PREFERRED_HTTP_PORT} if free; 0: any)")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="store seconds per wall second (default 60: a store hour a minute)")
    parser.add_argument("--seed", type=int, default=7, help="demo store and day plans")
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--duration", type=float,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--workdir", type=Path, default=Path("var/demo"),
                        help="state folder, wiped at every start (default var/demo)")
    parser.add_argument("--quiet", action="store_true", help="no line per recommendation")
    return parser


def demo_settings(workdir: Path, broker: tuple[str, int], http_port: int,
                  speed: float) -> EdgeSettings:
    """The demo edge: standalone (no hub), timers scaled to the simulator's speed."""
    base = VisitConfig()
    visit = dataclasses.replace(
        base,
        zone_min_dwell_s=base.zone_min_dwell_s / speed,
        exit_grace_s=base.exit_grace_s / speed,
        visit_timeout_s=base.visit_timeout_s / speed,
        zone_switch_stale_s=base.zone_switch_stale_s / speed,
    )
    rules = RulesConfig(quiet_hours=(0, 0), max_impressions_per_day=2_000,
                        max_app_offers_per_day=100)
    return EdgeSettings(
        chain=CHAIN,
        store=DEMO_STORE,
        db_path=workdir / "edge.db",
        http=HttpSettings(port=http_port),
        # A client id of its own and a short session: a previous run's queued events
        # must not be replayed into this run's fresh database on a shared broker.
        mqtt=MqttSettings(host=broker[0], port=broker[1], session_expiry_s=60,
                          client_id=f"storeside-edge-demo-{secrets.token_hex(3)}"),
        tokens=TokenSettings(public_keys_dir=workdir / "keys"),
        visit=visit,
        rules=rules,
        tick_interval_s=min(1.0, max(0.05, 6.0 / speed)),
    )


def _http_port(requested: int | None) -> int:
    if requested:
        return requested
    if requested is None:
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", PREFERRED_HTTP_PORT))
            return PREFERRED_HTTP_PORT
    return free_port()


def _fresh_workdir(workdir: Path) -> None:
    if workdir.exists() and any(workdir.iterdir()) and not (workdir / MARKER).exists():
        raise SystemExit(f"demo: {workdir} exists and is not a demo folder; not wiping it")
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "keys").mkdir(parents=True)
    (workdir / "hub").mkdir()
    (workdir / MARKER).write_text("wiped and refilled by every scripts/demo run\n")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Demo:
    """The processes of one demo run; ``close`` stops whatever was started."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir: Path = args.workdir.resolve()
        self.started = time.monotonic()
        self.broker: PrivateBroker | None = None
        self._broker_exit = contextlib.ExitStack()  # stops it and removes its temp folder
        self.edge: EdgeProcess | None = None
        self.sim: subprocess.Popen[bytes] | None = None
        self.probe: MqttProbe | None = None
        self.day = 0
        self.day_started = 0.0
        self.recommendations = 0
        self.first_recommendation_s: float | None = None
        self._print_lock = threading.Lock()

    # -- start-up ----------------------------------------------------------------
    def start(self) -> None:
        args = self.args
        _fresh_workdir(self.workdir)
        if args.broker is None:
            self.broker = self._broker_exit.enter_context(PrivateBroker())
            address = (self.broker.host, self.broker.port)
        else:
            address = args.broker
        signing = generate_signing_key()
        (self.workdir / "keys" / f"{KID}.pub").write_bytes(public_key_pem(signing))
        key = self.workdir / "hub" / f"{KID}.key"
        key.touch(mode=0o600)
        key.write_bytes(private_key_pem(signing))
        now = time.time()
        demo = generate_demo_store(args.seed, now=now, n_members=args.members)
        with EdgeStore(self.workdir / "edge.db") as store:
            counts = load_demo_store(store, demo, now=now)
        pairing_code = create_pairing_code(self.workdir / "edge.db", "demo tablet",
                                           PAIRING_TTL_S)
        settings = demo_settings(self.workdir, address, _http_port(args.http_port), args.speed)
        self.edge = EdgeProcess(settings, self.workdir, log_level="INFO").start(timeout=90)
        topics = settings.topics()
        self.probe = MqttProbe(address[0], address[1], [topics.staff_recommendations],
                               on_receive=self._on_recommendation).start()
        self._start_sim()
        self._banner(address, counts, pairing_code)

    def _start_sim(self) -> None:
        args = self.args
        host, port = args.broker or (self.broker.host, self.broker.port)  # type: ignore[union-attr]
        cmd = [sys.executable, "-m", "edge.simulator", "--broker", f"{host}:{port}",
               "--key", str(self.workdir / "hub" / f"{KID}.key"), "--chain", CHAIN,
               "--store", DEMO_STORE, "--seed", str(args.seed), "--members", str(args.members),
               "--day", str(self.day), "--speed", str(args.speed)]
        remaining = self._remaining()
        if remaining is not None:
            cmd += ["--duration", f"{max(remaining, 0.1):.3f}"]
        log = open(self.workdir / "sim.log", "ab")  # noqa: SIM115 - lives with the process
        self.sim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
        log.close()
        self.day_started = time.monotonic()

    def _remaining(self) -> float | None:
        if self.args.duration is None:
            return None
        return self.args.duration - (time.monotonic() - self.started)

    def _banner(self, broker: tuple[str, int], counts: dict[str, int],
                pairing_code: str) -> None:
        assert self.edge is not None
        url = self.edge.url
        tablet = pairing_link(url, pairing_code)
        code, ttl_min = format_code(pairing_code), PAIRING_TTL_S // 60
        prefix = f"storeside/{CHAIN}/{DEMO_STORE}"
        day_minutes = OPEN_HOURS * HOUR / self.args.speed / 60
        print(f"""
Storeside demo: store {CHAIN}/{DEMO_STORE}, {counts['products']} products, \
{counts['members']} members, {counts['purchase_lines']} past purchase lines
A simulated store day (09:00-21:00) plays at {self.args.speed:g}x: \
{day_minutes:.1f} minutes per day, then the next day.

  Staff tablet   {tablet}
                 (open it in one browser within {ttl_min} min, or type {code} at {url}/tablet:
                 it pairs that browser, then shows customers as they arrive. Another tablet:
                 storeside-edge pair-tablet --config {self.workdir}/edge.toml --label "Tablet 2")
  Edge status    {url}/v1/status      metrics {url}/metrics      API {url}/docs
  MQTT           {broker[0]}:{broker[1]}   watch: mosquitto_sub -h {broker[0]} \
-p {broker[1]} -t '{prefix}/#' -v
  Files          {self.workdir}/ (edge.toml, edge.log, sim.log, edge.db)

Ctrl-C stops everything. Staff recommendations as they happen (store time, trigger, \
customer, top picks):
""", flush=True)

    # -- running -----------------------------------------------------------------
    def _on_recommendation(self, item: Received) -> None:
        card: Any = item.payload
        if not isinstance(card, dict):
            return
        self.recommendations += 1
        if self.first_recommendation_s is None:
            self.first_recommendation_s = time.monotonic() - self.started
        if self.args.quiet:
            return
        store_s = (time.monotonic() - self.day_started) * self.args.speed
        picks = " | ".join(s.get("name", "?") for s in card.get("suggestions", [])[:3])
        where = f"@{card['zone']}" if card.get("zone") else ""
        line = (f"{store_clock(store_s)}  {card.get('trigger', '?'):<10} "
                f"{card.get('subject', '?')[:10]}… {where:<12} {picks}")
        with self._print_lock:
            print(line[:140], flush=True)

    def run(self) -> None:
        """Until Ctrl-C or ``--duration``; a finished store day starts the next one."""
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return
            assert self.sim is not None and self.edge is not None
            if self.edge.proc is None or self.edge.proc.poll() is not None:
                raise RuntimeError(f"the edge stopped; see {self.edge.log_path}")
            if self.sim.poll() is not None:
                summary = self._sim_summary()
                if remaining is not None or summary.get("interrupted", True):
                    return  # the day was cut short: a signal reached the whole group
                self.day += 1
                print(f"-- store day {self.day} opens", flush=True)
                self._start_sim()
            time.sleep(0.2)

    def _sim_summary(self) -> dict[str, Any]:
        """Print the finished simulator's summary line; {} when it printed none."""
        assert self.sim is not None
        out = self.sim.stdout.read() if self.sim.stdout else b""
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        except ValueError:
            return {}
        if summary:
            print(f"-- simulator (day {self.day}): {summary['total']} events "
                  f"{json.dumps(summary['events'])}", flush=True)
        return summary

    # -- shutdown ----------------------------------------------------------------
    def close(self) -> None:
        """Stop the simulator, the listener, the edge, the broker: each even if another
        failed, each bounded in time, so nothing outlives the demo."""
        if self.sim is not None:
            if self.sim.poll() is None:
                self.sim.terminate()
            try:
                self.sim.wait(10)
            except subprocess.TimeoutExpired:
                self.sim.kill()
                self.sim.wait(5)
            self._sim_summary()
            self.sim = None
        if self.probe is not None:
            with contextlib.suppress(Exception):
                self.probe.stop(timeout=1.0)
            self.probe = None
        if self.edge is not None:
            self.edge.stop()
            self.edge = None
        self._broker_exit.close()
        self.broker = None
        first = (f", the first {self.first_recommendation_s:.1f} s after start"
                 if self.first_recommendation_s is not None else "")
        print(f"-- demo stopped: {self.recommendations} staff recommendations{first}",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.speed > 0:
        raise SystemExit("demo: --speed must be > 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored
        signal.signal(signum, _raise_interrupt)
    demo = Demo(args)
    code = 0
    try:
        demo.start()
        demo.run()
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # broker or edge did not come up, or died
        print(f"demo: {exc}", file=sys.stderr)
        code = 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not
            signal.signal(signum, signal.SIG_IGN)      # leave children behind
        demo.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
