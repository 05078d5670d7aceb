"""Live-fuzz helpers: valid check-in traffic that must keep being served while a fuzzer runs,
and the edge's counters read back by label.

``CheckinLoad`` is a customer stream: every ``interval_s`` a new subject checks in over MQTT
(a real signed token, its own topic) and waits for the staff card that names its event
(``trigger_event_id``); a test asserts every check-in got its card within a bound.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

from edge.metrics import EdgeMetrics
from edge.probe import MqttProbe, Received
from edge.settings import RateLimitSettings
from tests.edge_env import EdgeEnv

# The fuzz streams check the same 40 members in hundreds of times within seconds: the
# per-member check-in limit (6/min) would turn valid events into ``rate_limited`` dead letters
# at times that depend on the box's speed; the limit has tests of its own (edge API auth).
FUZZ_LIMITS = RateLimitSettings(subject_checkins_per_min=1_000_000)


class CheckinLoad:
    """Background valid check-ins (one new subject each) and the cards they got."""

    def __init__(self, env: EdgeEnv, port: int, interval_s: float = 0.02,
                 prefix: str = "ok") -> None:
        self.env = env
        self.interval_s = interval_s
        self.prefix = prefix
        self.sent: dict[str, float] = {}  # event_id -> perf_counter at publish
        self.cards: dict[str, float] = {}  # event_id -> perf_counter at the card
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkin-load", daemon=True)
        self.probe = MqttProbe("127.0.0.1", port, [env.topics.staff_recommendations],
                               client_id=f"load-{uuid.uuid4().hex[:8]}", on_receive=self._card)

    def _card(self, received: Received) -> None:
        payload: Any = received.payload
        if isinstance(payload, dict) and payload.get("trigger") == "checkin":
            with self._lock:
                self.cards.setdefault(str(payload.get("trigger_event_id")), received.at)

    def _run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            subject = f"{self.prefix}-{n:05d}"
            n += 1
            body = self.env.checkin_payload(subject)
            with self._lock:
                self.sent[body["event_id"]] = time.perf_counter()
            self.probe.publish(self.env.topics.checkin(subject), body, qos=1)
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> CheckinLoad:
        self.probe.start()
        self._thread.start()
        return self

    def stop(self, settle_s: float = 5.0) -> None:
        """Stop sending, then wait (bounded) for the cards of what was sent."""
        self._stop.set()
        self._thread.join(5.0)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline and self.missing():
            time.sleep(0.05)
        self.probe.stop()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()

    def missing(self) -> list[str]:
        with self._lock:
            return [e for e in self.sent if e not in self.cards]

    def latencies_ms(self) -> list[float]:
        with self._lock:
            return sorted((self.cards[e] - t) * 1000 for e, t in self.sent.items()
                          if e in self.cards)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms()

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else -1.0

        return {"checkins": len(self.sent), "cards": len(lat), "missing": len(self.missing()),
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": round(max(lat, default=-1), 1)}


def samples(metrics: EdgeMetrics, family: str) -> Counter[tuple[str, ...]]:
    """``{label values: value}`` of one counter family (``storeside_dead_letters``)."""
    out: Counter[tuple[str, ...]] = Counter()
    for fam in metrics.registry.collect():
        if fam.name == family:
            for sample in fam.samples:
                if sample.name.endswith("_total"):
                    out[tuple(sample.labels.values())] += int(sample.value)
    return out
