"""``storeside-sim`` against a real Mosquitto: what it publishes, offers it reacts to, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from edge.broker import PrivateBroker, free_port
from edge.demo_store import demo_population
from edge.messages import parse_inbound
from edge.probe import MqttProbe, wait_until
from edge.sim_day import SimEvent
from edge.simulator import Simulator
from edge.tokens import TokenVerifier
from edge.topics import Topics
from hub.tokens import (
    generate_signing_key,
    load_private_key,
    mint_checkin_token,
    private_key_pem,
    public_key_pem,
)

TOPICS = Topics("demo", "demo-001")


@pytest.fixture()
def key(tmp_path: Path) -> Path:
    path = tmp_path / "k1.key"
    path.write_bytes(private_key_pem(generate_signing_key()))
    return path


def _sim(broker: PrivateBroker, key: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.simulator", "--broker", f"127.0.0.1:{broker.port}",
         "--key", str(key), "--members", "60", "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_publishes_valid_events_with_verifiable_tokens(broker: PrivateBroker,
                                                       key: Path) -> None:
    with MqttProbe(broker.host, broker.port, [f"{TOPICS.prefix}/in/#"]) as listener:
        proc = _sim(broker, key, "--speed", "50000", "--duration", "0.5", "--run-id", "t1")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        sent = summary["events"]
        qos1 = sum(n for kind, n in sent.items() if kind != "beacon")
        wait_until(lambda: len(listener.matching(lambda r: "/beacon" not in r.topic)) >= qos1,
                   10)
    assert summary["total"] == sum(sent.values())
    assert {"checkin", "geofence", "beacon", "pos"} <= set(sent)
    verifier = TokenVerifier({"k1": public_key_pem(load_private_key(key.read_bytes()))},
                             chain="demo", store="demo-001")
    members = {m.subject: m for m in demo_population(7, 60).members}
    received: Counter[str] = Counter()
    for item in listener.received:
        kind, subject = TOPICS.route(item.topic) or (None, None)
        msg = parse_inbound(kind, json.dumps(item.payload).encode(), subject=subject)
        assert msg.event_id.startswith("t1-d0-")
        received[kind] += 1
        if kind == "checkin":
            claims = verifier.verify(msg.token, time.time())  # type: ignore[union-attr]
            assert claims.subject == subject
            assert claims.scopes == frozenset(members[subject].scopes)
    for kind in ("checkin", "geofence", "pos"):
        assert received[kind] == sent[kind]


def test_feedback_names_the_offer_the_member_received(broker: PrivateBroker,
                                                      key: Path) -> None:
    """The plan cannot know what the edge will offer: the simulator fills it in from the
    member's offers topic, adds a redeemed offer to the basket, and skips feedback on
    nothing."""
    offered, ignored = "m-00000000000000aa", "m-00000000000000bb"
    pem = key.read_bytes()
    events = [
        SimEvent(0.0, "feedback", "e1", offered, {"subject": offered, "product_id": "sku-1",
                                                  "visit_id": None, "action": "accepted",
                                                  "channel": "app"}),
        SimEvent(1.0, "feedback", "e2", ignored, {"subject": ignored, "product_id": "sku-1",
                                                  "visit_id": None, "action": "dismissed",
                                                  "channel": "app"}),
        SimEvent(2.0, "feedback", "e3", offered, {"subject": offered, "product_id": "sku-1",
                                                  "visit_id": None, "action": "redeemed",
                                                  "channel": "app"}),
        SimEvent(3.0, "pos", "e4", offered, {"basket_id": "b1", "subject": offered, "lines": [
            {"product_id": "sku-10001", "quantity": 1, "unit_price": 28.99}]}),
    ]
    probe = MqttProbe(broker.host, broker.port, [f"{TOPICS.prefix}/app/+/offers"])

    def mint(subject: str, scopes: tuple[str, ...], now: float) -> str:
        return mint_checkin_token(pem, kid="k1", subject=subject, chain="demo",
                                  store="demo-001", scopes=scopes, now=now)

    sim = Simulator(probe, TOPICS, mint, speed=1000.0, run="r")
    probe.on_receive = sim.on_offer
    with probe, MqttProbe(broker.host, broker.port, [f"{TOPICS.prefix}/in/#"]) as listener, \
            MqttProbe(broker.host, broker.port) as edge:
        edge.publish(TOPICS.app_offers(offered), {"v": 1, "event_id": "o1", "ts": time.time(),
                                                  "visit_id": "v-123", "product_id": "sku-10042",
                                                  "name": "Scented candle", "price": 18.99,
                                                  "offer_id": None, "reasons": []})
        wait_until(lambda: sim.offers_received == 1, 5)
        sim.run_events(events)
        wait_until(lambda: len(listener.received) == 3, 5)
    feedback = [r.payload for r in listener.received if r.topic.endswith("/feedback")]
    assert [(f["action"], f["product_id"], f["visit_id"]) for f in feedback] == [
        ("accepted", "sku-10042", "v-123"), ("redeemed", "sku-10042", "v-123")]
    basket = next(r.payload for r in listener.received if r.topic == TOPICS.pos)
    assert [line["product_id"] for line in basket["lines"]] == ["sku-10001", "sku-10042"]
    assert sim.skipped == {"feedback_no_offer": 1}
    assert sim.counts == {"feedback": 2, "pos": 1}


def test_sigterm_stops_with_a_summary(broker: PrivateBroker, key: Path) -> None:
    with MqttProbe(broker.host, broker.port, [f"{TOPICS.prefix}/in/#"]) as listener:
        proc = _sim(broker, key, "--speed", "600")
        try:
            wait_until(lambda: listener.received, 20)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True and summary["total"] >= 1


def test_refuses_an_unreachable_broker(key: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.simulator", "--broker", f"127.0.0.1:{free_port()}",
         "--key", str(key)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "cannot reach the broker" in proc.stderr
