"""Property-based fuzzing of the whole handler path: the dispatcher's ``_handle`` (parse,
handler, dead letters, counters) on a real edge runtime — SQLite store, ONNX ranker, token
verifier with real keys — for every inbound channel.

The runtime's worker is stopped and ``_handle`` + the group commit run on the test thread,
one payload at a time, so each example's effect can be read exactly. Properties: handling
never raises; a rejected payload increments exactly one dead-letter counter (with a reason
its label allows) and writes nothing; a refused token increments exactly one token counter;
a valid event is in SQLite exactly once; a replayed payload has no second effect; nothing is
ever a ``handler_error``.
"""

from __future__ import annotations

import base64
import json
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.live import LiveHub
from edge.messages import Inbound
from edge.metrics import EdgeMetrics
from edge.runtime import EdgeRuntime
from edge.topics import Topics
from hub.tokens import generate_signing_key, private_key_pem
from tests.edge_env import EdgeEnv, make_env
from tests.fuzz_live import FUZZ_LIMITS
from tests.fuzz_payloads import CHANNELS, REPLAY, SUBJECTS, TOKEN_REFUSED, VALID, Case, Generator
from tests.test_fuzz_messages import TALLY, fuzz

HANDLER_EXAMPLES = 3_600
TABLES = ("processed_events", "purchases", "feedback", "outbox", "seen_tokens", "visits",
          "impressions")
COUNTERS = ("storeside_dead_letters", "storeside_tokens_rejected",
            "storeside_messages_handled", "storeside_duplicate_events")


def topic_of(topics: Topics, case: Case) -> str:
    if case.channel == "pos":
        return topics.pos
    if case.channel == "staff_feedback":
        return topics.staff_feedback
    assert case.subject is not None
    return topics.app(case.subject, case.kind)


def counters(metrics: EdgeMetrics) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for family in metrics.registry.collect():
        if family.name in COUNTERS:
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(family.name, *sample.labels.values())] += int(sample.value)
    return out


class Harness:
    """A stopped runtime whose dispatcher the test drives by hand."""

    def __init__(self, env: EdgeEnv) -> None:
        self.env = env
        self.metrics = EdgeMetrics()
        self.runtime = EdgeRuntime.start(env.settings, self.metrics, LiveHub(self.metrics),
                                         connect_mqtt=False)
        self.runtime.dispatcher.stop()  # its worker: the test thread handles instead
        self.db = sqlite3.connect(f"file:{env.settings.db_path}?mode=ro", uri=True)
        self.accepted_tokens: list[str] = []
        self.other_key = private_key_pem(generate_signing_key())
        self.mid = 0

    def token(self, subject: str) -> str:
        return self.env.token(subject)

    def bad_token(self, rng: random.Random, subject: str) -> str:
        """A JWT-shaped token the check-in handler must refuse (never a valid one)."""
        pick = rng.randrange(6)
        if pick == 0 or (pick == 5 and not self.accepted_tokens):
            seg = [base64.urlsafe_b64encode(rng.randbytes(rng.randint(1, 60))).rstrip(b"=")
                   for _ in range(3)]
            return b".".join(s or b"A" for s in seg).decode()
        if pick == 1:
            return self.env.token(rng.choice([s for s in SUBJECTS if s != subject]))
        if pick == 2:
            return self.env.token(subject, now=time.time() - 4_000)
        if pick == 3:
            return self.env.token(subject, private_pem=self.other_key)
        if pick == 4:
            return self.env.token(subject, store="s999")
        return rng.choice(self.accepted_tokens)  # a replayed token, new event id

    def rows(self) -> tuple[int, ...]:
        query = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)
        return tuple(self.db.execute(query).fetchone())

    def times_processed(self, event_id: str) -> int:
        return int(self.db.execute("SELECT count(*) FROM processed_events WHERE event_id = ?",
                                   (event_id,)).fetchone()[0])

    def handle(self, case: Case) -> None:
        self.mid += 1
        qos = 0 if case.kind == "beacon" else 1
        inbound = Inbound(case.kind, topic_of(self.env.topics, case), case.payload, qos,
                          self.mid, time.monotonic(), case.subject)
        dispatcher = self.runtime.dispatcher
        dispatcher._handle(inbound)  # must not raise, whatever the payload
        dispatcher._commit()

    def close(self) -> None:
        self.db.close()
        self.runtime.stop()


@pytest.fixture()
def harness(tmp_path: Path, tafeng_zip: Path) -> Iterator[Harness]:
    env = make_env(tmp_path, tafeng_zip, broker_port=1, n_products=150, n_members=20,
                   rate_limits=FUZZ_LIMITS)
    running = Harness(env)
    try:
        yield running
    finally:
        running.close()


def delta(after: Counter[tuple[str, ...]], before: Counter[tuple[str, ...]]) -> dict[Any, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def check_one(h: Harness, case: Case, outcomes: Counter[str]) -> None:
    before, rows = counters(h.metrics), h.rows()
    h.handle(case)
    moved = delta(counters(h.metrics), before)
    dead = {k: v for k, v in moved.items() if k[0] == "storeside_dead_letters"}
    assert not any(k[2] == "handler_error" for k in dead), (case.mutation, moved)
    if case.rejected:
        assert list(dead.values()) == [1], (case.mutation, case.payload[:200], moved)
        (_, kind, reason), = dead
        assert kind == case.kind and reason in case.expect, (case.mutation, reason)
        assert set(moved) == set(dead), moved  # nothing handled, nothing else counted
        assert h.rows() == rows, case.mutation  # nothing written
        outcomes[f"dead_letter:{reason}"] += 1
        return
    assert not dead, (case.mutation, case.payload[:200], moved)
    if case.expect == TOKEN_REFUSED:
        assert [k[0] for k in moved] == ["storeside_tokens_rejected"], moved
        assert list(moved.values()) == [1]
        assert h.rows() == rows
        outcomes[f"token_refused:{next(iter(moved))[1]}"] += 1
        return
    if case.expect == REPLAY:
        assert h.rows() == rows, (case.kind, "a replay wrote rows")
        if case.kind in ("checkin", "pos", "feedback"):
            assert moved.get(("storeside_duplicate_events", case.kind)) == 1, moved
        outcomes[f"replay:{case.kind}"] += 1
        return
    assert case.expect == VALID and case.event_id is not None
    assert moved.get(("storeside_messages_handled", case.kind)) == 1, (case.payload[:300], moved)
    if case.kind in ("checkin", "pos", "feedback"):
        assert h.times_processed(case.event_id) == 1
    if case.kind == "checkin":
        h.accepted_tokens.append(json.loads(case.payload)["token"])
    outcomes[f"valid:{case.kind}"] += 1


def test_every_payload_on_every_handler_is_handled_or_counted_once(harness: Harness) -> None:
    gen = Generator(random.Random(0), token=harness.token, bad_token=harness.bad_token,
                    huge_max=300_000, replay_rate=0.08)
    outcomes: Counter[str] = Counter()

    @fuzz(HANDLER_EXAMPLES)
    @given(st.integers(0, 2**63), st.sampled_from(sorted(CHANNELS)))
    def check(seed: int, channel: str) -> None:
        # hypothesis draws a fixed amount (seed, channel) whatever the generator's state:
        # the generator remembers what was sent, for replays
        gen.rng = random.Random(seed)
        check_one(harness, gen.next(channel), outcomes)

    started = time.perf_counter()
    check()
    total = sum(outcomes.values())
    TALLY["handler_path"] += total
    print(json.dumps({"handler_path": dict(sorted(outcomes.items())), "examples": total,
                      "mutations": gen.counts, "seconds": round(time.perf_counter() - started, 1),
                      "tally": dict(TALLY)}))
    assert total >= HANDLER_EXAMPLES * 0.95
    for kind in ("checkin", "geofence", "beacon", "pos", "feedback"):
        assert outcomes[f"valid:{kind}"] > 0 and outcomes[f"replay:{kind}"] > 0, kind
    assert sum(v for k, v in outcomes.items() if k.startswith("token_refused")) > 0
