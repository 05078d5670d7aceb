"""Live fuzz: 10,000 generated payloads over a real Mosquitto into a real edge, on every
inbound topic (plus topics with bad subjects and unknown kinds), while a customer stream of
valid app check-ins every 20 ms must keep getting its staff cards.

Payloads come from tests/fuzz_payloads.py with a fixed seed (the in-process hypothesis tests
prove the generator's labels against ``parse_inbound``). Afterwards: the edge is alive and
ready; ``storeside_dead_letters_total`` per kind and reason equals what was sent invalid and
reached the edge (QoS 1 exactly; QoS 0 beacons within what ``storeside_queue_dropped_total``
says was dropped); refused tokens are counted; every valid event is in SQLite exactly once;
every check-in of the stream got its card. The counts are printed as JSON for the issue note.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe, wait_until
from edge.messages import DeadLetter, parse_inbound
from edge.topics import KIND_QOS
from tests.edge_env import EdgeEnv, make_env
from tests.fuzz_live import FUZZ_LIMITS, CheckinLoad, samples
from tests.fuzz_payloads import REPLAY, SUBJECTS, TOKEN_REFUSED, VALID, Case, Generator
from tests.test_fuzz_handlers import topic_of

SEED = 20_260_611
PAYLOADS = 10_000
BATCH = 200
CARD_BOUND_S = 2.0
MAX_PACKET = 16 * 16_384  # the edge's MQTT Maximum Packet Size (edge.mqtt)
BAD_SUBJECTS = ("x", "-lead", "has space", "é-utf8", "a" * 65, "bad!subj", ".dot")
UNKNOWN_KIND_TOPICS = ("in/app/fz-001/teleport", "in/app/fz-001/pos", "in/other",
                       "in/app/fz-001/checkin/extra", "in/staff/feedback/x", "in/pos/2")


class TokenSource:
    """Real tokens for the fuzz stream, and refusable ones for its ``bad_token`` cases."""

    def __init__(self, env: EdgeEnv) -> None:
        self.env = env
        self.accepted: dict[str, list[str]] = {}

    def good(self, subject: str) -> str:
        return self.env.token(subject)

    def bad(self, rng: random.Random, subject: str) -> str:
        pick = rng.randrange(4)
        if pick == 0 and self.accepted.get(subject):
            return rng.choice(self.accepted[subject])  # replayed token, same topic
        if pick == 1:
            return self.env.token(rng.choice([s for s in SUBJECTS if s != subject]))
        if pick == 2:
            return self.env.token(subject, now=time.time() - 4_000)  # expired
        return self.env.token(subject, store="s999")  # another store's audience


def oracle(case: Case) -> str:
    """What the edge must count for a case that reaches it: the dead-letter reason, or
    the label (valid, replay, token refusal). The label must allow the reason."""
    if case.expect in (REPLAY, TOKEN_REFUSED):
        return str(case.expect)
    try:
        parse_inbound(case.kind, case.payload, subject=case.subject)
    except DeadLetter as dead:
        assert case.rejected and dead.reason in case.expect, (case.mutation, dead.reason)
        return dead.reason
    assert case.expect == VALID, case.mutation
    return VALID


def test_live_fuzz_over_mosquitto_counts_every_reject_and_keeps_serving(
    tmp_path: Path, tafeng_zip: Path, fresh_broker: PrivateBroker
) -> None:
    env = make_env(tmp_path, tafeng_zip, fresh_broker.port, n_products=150, n_members=20,
                   rate_limits=FUZZ_LIMITS)
    tokens = TokenSource(env)
    gen = Generator(random.Random(SEED), token=tokens.good, bad_token=tokens.bad)
    rng = random.Random(SEED + 1)
    sent: Counter[str] = Counter()  # per channel / topic group
    expected: Counter[tuple[str, str]] = Counter()  # (kind, outcome) that reach the edge
    valid_ids: dict[str, list[str]] = {"checkin": [], "pos": [], "feedback": []}
    unreached = 0
    waits: Counter[str] = Counter()
    started = time.perf_counter()
    with EmbeddedEdge(env.settings) as edge:
        metrics = edge.runtime.metrics
        dispatcher = edge.runtime.dispatcher
        load = CheckinLoad(env, fresh_broker.port)
        with MqttProbe("127.0.0.1", fresh_broker.port, client_id="fuzzer") as fuzzer, load:
            for n in range(PAYLOADS):
                pick = rng.random()
                if pick < 0.03:  # a bad subject level: reaches the edge as kind "unknown"
                    kind = rng.choice(("checkin", "geofence", "beacon", "feedback"))
                    topic = f"{env.topics.prefix}/in/app/{rng.choice(BAD_SUBJECTS)}/{kind}"
                    qos = KIND_QOS[kind]
                    payload = gen.case("geofence").payload
                    fuzzer.publish(topic, payload, qos=qos)
                    sent["bad_subject_topic"] += 1
                    if len(payload) + 200 > MAX_PACKET:  # the broker never delivers it
                        unreached += 1
                        continue
                    expected[("unknown", "unknown_topic" if qos else "unknown_topic_qos0")] += 1
                elif pick < 0.05:  # a kind nobody subscribed to: never reaches the edge
                    topic = f"{env.topics.prefix}/{rng.choice(UNKNOWN_KIND_TOPICS)}"
                    fuzzer.publish(topic, gen.case("pos").payload, qos=1)
                    sent["unknown_kind_topic"] += 1
                else:
                    case = gen.next()
                    sent[case.channel] += 1
                    fuzzer.publish(topic_of(env.topics, case), case.payload,
                                   qos=KIND_QOS[case.kind])
                    if len(case.payload) + 200 > MAX_PACKET:  # the broker never delivers it
                        unreached += 1
                        continue
                    outcome = oracle(case)
                    qos0 = "_qos0" if case.kind == "beacon" else ""
                    expected[(case.kind, outcome + qos0)] += 1
                    if outcome == VALID and case.kind in valid_ids:
                        assert case.event_id is not None
                        valid_ids[case.kind].append(case.event_id)
                        if case.kind == "checkin":
                            token = json.loads(case.payload)["token"]
                            tokens.accepted.setdefault(str(case.subject), []).append(token)
                if n % BATCH == BATCH - 1:  # pace: the queue never overflows into drops
                    t0 = time.perf_counter()
                    fuzzer.flush(30)
                    t1 = time.perf_counter()
                    wait_until(lambda: dispatcher.depth < 500, timeout=30)
                    waits["flush"] += t1 - t0
                    waits["depth"] += time.perf_counter() - t1
            fuzzer.flush(30)
            reaching = sum(expected.values()) + 0
            try:
                wait_until(lambda: _received(metrics) >= reaching + len(load.sent), timeout=60)
            except TimeoutError:
                got = samples(metrics, "storeside_messages_received")
                raise AssertionError(f"edge received {dict(got)}, expected {reaching} + "
                                     f"{len(load.sent)} stream; sent {dict(expected)}") from None
            load.stop(settle_s=10)
        wait_until(lambda: dispatcher.depth == 0, timeout=30)
        ready = httpx.get(f"{edge.url}/readyz", timeout=5)
        fuzz_seconds = time.perf_counter() - started
        report = _check_counters(metrics, expected, load)
        alive = edge.runtime.dispatcher.running
    report.update(sent=dict(sent), unreached_oversize=unreached, payloads=PAYLOADS,
                  load=load.summary(), seconds=round(fuzz_seconds, 1),
                  mutations=gen.counts, waits={k: round(v, 1) for k, v in waits.items()})
    print(json.dumps({"live_mqtt_fuzz": report}, sort_keys=True))
    assert ready.status_code == 200 and ready.json()["ready"], ready.text
    assert alive
    assert sum(sent.values()) == PAYLOADS
    assert not load.missing(), f"{len(load.missing())} check-ins got no card"
    assert load.latencies_ms()[-1] <= CARD_BOUND_S * 1000, load.summary()
    _check_sqlite(env, valid_ids, list(load.sent))


def _received(metrics: Any) -> int:
    return sum(samples(metrics, "storeside_messages_received").values())


def _check_counters(metrics: Any, expected: Counter[tuple[str, str]],
                    load: CheckinLoad) -> dict[str, Any]:
    dead = samples(metrics, "storeside_dead_letters")
    dropped = samples(metrics, "storeside_queue_dropped")
    handled = samples(metrics, "storeside_messages_handled")
    refused = sum(samples(metrics, "storeside_tokens_rejected").values())
    want: Counter[tuple[str, str]] = Counter()
    for (kind, outcome), n in expected.items():
        want[(kind, outcome.removesuffix("_qos0"))] += n
    assert ("handler_error" not in {r for _, r in dead}), dead
    for (kind, reason), n in dead.items():  # every reject counted, under its reason
        lost = dropped[(kind,)]
        assert want[(kind, reason)] - lost <= n <= want[(kind, reason)], (kind, reason, n)
    for (kind, outcome), n in want.items():
        if outcome not in (VALID, REPLAY, TOKEN_REFUSED):
            assert dead[(kind, outcome)] >= n - dropped[(kind,)], (kind, outcome, n)
    assert refused == sum(n for (_, o), n in want.items() if o == TOKEN_REFUSED)
    for kind in ("checkin", "geofence", "beacon", "pos", "feedback"):
        ok = sum(n for (k, o), n in want.items() if k == kind and o in (VALID, REPLAY))
        ok += len(load.sent) if kind == "checkin" else 0
        assert ok - dropped[(kind,)] <= handled[(kind,)] <= ok, (kind, handled[(kind,)], ok)
    return {
        "rejects_per_reason": {f"{k}/{r}": n for (k, r), n in sorted(dead.items())},
        "dead_letters_total": sum(dead.values()),
        "tokens_refused": refused,
        "handled": {k[0]: n for k, n in sorted(handled.items())},
        "dropped_qos0": {k[0]: n for k, n in dropped.items()},
    }


def _check_sqlite(env: EdgeEnv, valid_ids: dict[str, list[str]], load_ids: list[str]) -> None:
    """Every valid event (and every stream check-in) is in processed_events exactly once."""
    db = sqlite3.connect(f"file:{env.settings.db_path}?mode=ro", uri=True)
    try:
        rows = dict(db.execute("SELECT event_id, count(*) FROM processed_events "
                               "GROUP BY event_id").fetchall())
    finally:
        db.close()
    for kind, ids in {**valid_ids, "load": load_ids}.items():
        missing = [e for e in ids if rows.get(e) != 1]
        assert not missing, (kind, len(missing), missing[:3])
