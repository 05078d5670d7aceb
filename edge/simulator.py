"""``storeside-sim``: play a simulated store day over MQTT, as the apps and tills would.

The plan (``edge.sim_day``) is pure and reproducible from ``--seed``/``--day``; this module
is the I/O around it: it paces the events on the wall clock at ``--speed`` (60 = one store
hour per minute), mints each check-in token when it is sent (tokens are short-lived), and
listens to the offers the edge sends to the members' apps, so that app feedback names the
product the member was really offered (no offer received → no feedback, counted as
skipped). The last stdout line is a JSON summary (events by kind).

Members and products come from ``edge.demo_store`` with the same ``--seed``/``--members``
the store was seeded with (``scripts/demo`` does both).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.demo_store import DEMO_STORE, demo_population
from edge.probe import MqttProbe, Received
from edge.sim_day import HOUR, SimEvent, plan_day
from edge.topics import Topics
from hub.tokens import mint_checkin_token

logger = logging.getLogger(__name__)

OPENING_HOUR = 9
FLUSH_EVERY = 500  # wait for the broker's acks every N QoS 1 messages: bounded memory
RUN_ID = re.compile(r"^[A-Za-z0-9_.:]{1,16}$")
Mint = Callable[[str, tuple[str, ...], float], str]


def parse_hostport(value: str) -> tuple[str, int]:
    """``host:port`` → (host, port); argparse type for ``--broker``."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected host:port, got {value!r}")
    return host, int(port)


def store_clock(store_s: float) -> str:
    """Store seconds after opening → "HH:MM" on the store's clock."""
    minutes = int(OPENING_HOUR * 60 + store_s // 60)
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


@dataclass
class _Offer:
    product_id: str
    visit_id: str | None
    price: float | None
    offer_id: str | None = None  # the store offer (coupon) it came with, if any


@dataclass
class Simulator:
    """Publishes planned events on time; ``stop`` ends the run early (signals set it)."""

    probe: MqttProbe
    topics: Topics
    mint: Mint
    speed: float
    run: str
    stop: threading.Event = field(default_factory=threading.Event)
    counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._offers: dict[str, _Offer] = {}
        self._redeemed: dict[str, _Offer] = {}
        self._lock = threading.Lock()
        self.offers_received = 0

    def on_offer(self, item: Received) -> None:
        """Remember the latest offer per member (the subject is a level of the topic)."""
        payload = item.payload
        if not isinstance(payload, dict) or "product_id" not in payload:
            return
        subject = item.topic.split("/")[-2]
        with self._lock:
            self._offers[subject] = _Offer(payload["product_id"], payload.get("visit_id"),
                                           payload.get("price"), payload.get("offer_id"))
            self.offers_received += 1

    def _payload(self, event: SimEvent, ts: float) -> dict[str, Any] | None:
        token = None
        if event.kind == "checkin":
            assert event.subject is not None
            token = self.mint(event.subject, event.scopes, ts)
        body = event.payload(ts, token, self.run)
        subject = event.subject
        if event.kind == "feedback" and subject is not None:
            with self._lock:
                offer = self._offers.get(subject)
            if offer is None:
                return None  # nothing was offered: nothing to react to
            body["product_id"], body["visit_id"] = offer.product_id, offer.visit_id
            if body["action"] == "redeemed":
                self._redeemed[subject] = offer
                if offer.offer_id is not None:  # the app redeems the coupon it was given
                    body["offer_id"] = offer.offer_id
        elif event.kind == "pos" and subject is not None and subject in self._redeemed:
            offer = self._redeemed.pop(subject)
            if all(line["product_id"] != offer.product_id for line in body["lines"]):
                body["lines"] = [*body["lines"], {"product_id": offer.product_id,
                                                  "quantity": 1, "unit_price": offer.price}]
        return body

    def run_events(self, events: Iterable[SimEvent], start_s: float = 0.0) -> None:
        """Publish ``events`` (in time order) paced at ``speed`` until done or ``stop``."""
        t0 = time.perf_counter()
        pending_qos1 = 0
        next_report = start_s + HOUR
        for event in events:
            delay = t0 + (event.at - start_s) / self.speed - time.perf_counter()
            if (delay > 0 and self.stop.wait(delay)) or self.stop.is_set():
                break
            body = self._payload(event, time.time())
            if body is None:
                self.skipped[f"{event.kind}_no_offer"] += 1
                continue
            self.probe.publish(event.topic(self.topics), body, qos=event.qos)
            self.counts[event.kind] += 1
            pending_qos1 += event.qos
            if pending_qos1 >= FLUSH_EVERY:
                self.probe.flush()
                pending_qos1 = 0
            if event.at >= next_report:
                logger.info("store time %s: %d events sent", store_clock(event.at),
                            sum(self.counts.values()))
                next_report += HOUR
        self.probe.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="storeside-sim",
        description="Play a simulated store day over MQTT, as the store's apps and tills would.",
    )
    parser.add_argument("--broker", type=parse_hostport, default=("127.0.0.1", 1883),
                        help="MQTT broker host:port (default 127.0.0.1:1883)")
    parser.add_argument("--key", type=Path, required=True,
                        help="the hub's Ed25519 private key (KID.key) to sign check-in tokens")
    parser.add_argument("--kid", help="key id (default: the key file's name without .key)")
    parser.add_argument("--chain", default="demo")
    parser.add_argument("--store", default=DEMO_STORE)
    parser.add_argument("--seed", type=int, default=7,
                        help="the demo store's seed (members, products) and the plan's")
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--day", type=int, default=0, help="which store day of the seed")
    parser.add_argument("--speed", type=float, default=60.0,
                        help="store seconds per wall second (60: one store hour a minute)")
    parser.add_argument("--duration", type=float,
                        help="wall seconds to run (default: until the store closes)")
    parser.add_argument("--run-id", help="prefix of event ids (default: random)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def _check(args: argparse.Namespace) -> None:
    if not args.speed > 0:
        raise SystemExit("storeside-sim: --speed must be > 0")
    if args.duration is not None and not args.duration > 0:
        raise SystemExit("storeside-sim: --duration must be > 0")
    if args.run_id is not None and not RUN_ID.match(args.run_id):
        raise SystemExit("storeside-sim: --run-id: 1-16 of [A-Za-z0-9_.:]")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _check(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        private_pem = args.key.read_bytes()
    except OSError as exc:
        print(f"storeside-sim: cannot read key {args.key}: {exc.strerror}", file=sys.stderr)
        return 2
    kid = args.kid or args.key.stem
    topics = Topics(args.chain, args.store)

    def mint(subject: str, scopes: tuple[str, ...], now: float) -> str:
        return mint_checkin_token(private_pem, kid=kid, subject=subject, chain=args.chain,
                                  store=args.store, scopes=scopes, now=now)

    population = demo_population(args.seed, args.members)
    end_s = math.inf if args.duration is None else args.duration * args.speed
    events = plan_day(population, seed=args.seed, day=args.day, end_s=end_s)
    host, port = args.broker
    probe = MqttProbe(host, port, [f"{topics.prefix}/app/+/offers"],
                      client_id=f"storeside-sim-{secrets.token_hex(4)}")
    sim = Simulator(probe, topics, mint, args.speed, args.run_id or secrets.token_hex(3))
    probe.on_receive = sim.on_offer
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sim.stop.set())
    try:
        probe.start()
    except (OSError, TimeoutError) as exc:
        print(f"storeside-sim: cannot reach the broker {host}:{port}: {exc}", file=sys.stderr)
        return 2
    error = None
    started = time.perf_counter()
    try:
        sim.run_events(events)
    except (RuntimeError, ValueError) as exc:  # paho: a publish failed (broker gone)
        error = str(exc)
        logger.error("stopped: %s", error)
    finally:
        with contextlib.suppress(RuntimeError, ValueError):
            probe.stop(timeout=2.0)
    wall_s = time.perf_counter() - started
    total = sum(sim.counts.values())
    print(json.dumps({
        "run_id": sim.run,
        "seed": args.seed,
        "day": args.day,
        "speed": args.speed,
        "events": dict(sorted(sim.counts.items())),
        "total": total,
        "skipped": dict(sorted(sim.skipped.items())),
        "offers_received": sim.offers_received,
        "wall_s": round(wall_s, 3),
        "events_per_s": round(total / wall_s, 1) if wall_s > 0 else None,
        "interrupted": sim.stop.is_set(),
        "error": error,
    }), flush=True)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
