"""Model rollout on real processes: a hub (``storeside-hub serve``), two edges
(``storeside-edge``), Mosquitto, onnxruntime, SQLite files.

The hub trains on the baskets its stores sent, publishes a signed bundle, rolls it out to a
canary then to all stores, and back; the edges swap models while kiosk check-ins keep
coming, refuse what is not exactly what the model-signing key signed, and roll back a model
that is too slow for them. The figures (train time, swap time, check-ins answered) are
printed for the record (``pytest -s``).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.broker import PrivateBroker, free_port
from edge.devtools import EdgeProcess, wait_until
from edge.settings import EdgeSettings, HubLinkSettings, ModelUpdateSettings
from hub.app import open_context
from hub.devtools import HubProcess, hub_settings
from hub.model_training import publish_bundle
from hub.tokens import generate_signing_key, private_key_pem
from models.signing import sign
from models.synthetic import DAY, synthetic_transactions
from tests.edge_env import EdgeEnv, make_env, new_id
from tests.model_env import basket_events, copy_bundle, slow_bundle, stored_archive, tamper

pytest.importorskip("lightgbm")

REPO = Path(__file__).resolve().parent.parent
STORES = ("store-a", "store-b")
KID = "model-k1"
TIMEOUT = 30.0


@dataclass
class World:
    tmp: Path
    hub: HubProcess
    envs: dict[str, EdgeEnv]
    edges: dict[str, EdgeProcess] = field(default_factory=dict)

    def cli(self, *args: str) -> dict[str, Any]:
        """``storeside-hub <args> --config hub.toml``, as the central team runs it."""
        done = subprocess.run(
            [sys.executable, "-m", "hub.cli", *args, "--config", str(self.hub.config)],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        out: dict[str, Any] = json.loads(done.stdout) if done.stdout.startswith("{") else {}
        return out

    def rollout_state(self) -> dict[str, dict[str, Any]]:
        with self.hub.admin() as client:
            body = client.get("/v1/models/rollout").raise_for_status().json()
        return {row["store"]: row for row in body["stores"]}

    def edge_status(self, store: str) -> dict[str, Any]:
        status: dict[str, Any] = httpx.get(f"{self.edges[store].url}/v1/status").json()
        return status

    def wait_state(self, store: str, version: str, state: str) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            row = self.rollout_state()[store]
            report = row["last_report"] or {}
            return row if report.get("version") == version and row["state"] == state else None

        return wait_until(reached, TIMEOUT, interval=0.05)

    def wait_running(self, store: str, version: str) -> None:
        wait_until(lambda: self.edge_status(store)["model_version"] == version, TIMEOUT, 0.05)

    def ingest(self, rows: list[Any]) -> None:
        per_store = basket_events(rows, {"S0": STORES[0], "S1": STORES[1]})
        for store, events in per_store.items():
            with self.hub.store(store) as client:
                for i in range(0, len(events), 1000):
                    answer = client.post(f"/v1/stores/{store}/events",
                                         json={"events": events[i:i + 1000]})
                    assert answer.status_code == 200 and not answer.json()["refused"]


class CheckinLoad(threading.Thread):
    """Kiosk check-ins alternating between the edges until stopped; every answer kept."""

    def __init__(self, world: World) -> None:
        super().__init__(name="checkin-load", daemon=True)
        self.world = world
        self.answers: list[tuple[str, int | str, str | None, str | None]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self.halt.is_set():
                store = STORES[i % len(STORES)]
                i += 1
                env = self.world.envs[store]
                payload = {"v": 1, "event_id": new_id(), "ts": time.time(),
                           "token": env.token(f"m-{secrets.token_hex(8)}", store=store)}
                try:
                    r = client.post(f"{self.world.edges[store].url}/v1/checkin", json=payload)
                    card = r.json().get("card") if r.status_code == 200 else None
                    self.answers.append((store, r.status_code, card and card["model_version"],
                                         card and card["source"]))
                except httpx.HTTPError as exc:
                    self.answers.append((store, repr(exc), None, None))
                self.halt.wait(0.005)  # pacing of the load, not synchronisation

    def versions(self, store: str) -> list[str | None]:
        """Model versions that answered ``store``, in order, consecutive repeats folded."""
        out: list[str | None] = []
        for s, _, version, _ in self.answers:
            if s == store and (not out or out[-1] != version):
                out.append(version)
        return out


def start_edge(settings: EdgeSettings, workdir: Path) -> EdgeProcess:
    """An edge on a fresh port, checked to be this one: other test runs on the machine
    may take a port between ``free_port`` and the bind, and then answer /readyz."""
    for _ in range(3):
        http = settings.http.model_copy(update={"port": free_port()})
        edge = EdgeProcess(settings.model_copy(update={"http": http}), workdir).start()
        status = httpx.get(f"{edge.url}/v1/status").json()
        if edge.proc is not None and edge.proc.poll() is None and (
                status.get("store") == settings.store):
            return edge
        edge.stop()
    raise RuntimeError(f"could not start the edge of {settings.store}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tafeng_zip: Path,
          broker: PrivateBroker) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("rollout")
    settings = hub_settings(tmp / "hub", models={"signing_keys_dir": str(tmp / "model-keys"),
                                                 "threads": 1})
    (tmp / "hub").mkdir()
    hub = HubProcess(tmp / "hub", stores=STORES, settings=settings).start()
    envs = {}
    for store in STORES:
        hub_link = HubLinkSettings(hub_url=hub.url, store_key=hub.store_keys[store],
                                   poll_interval_s=0.3)
        # budget: 10 ms for one model call (the shipped trees take ~0.2 ms for 1,000
        # candidates, the slow test model ~35 ms); headroom for a busy CI machine
        models = ModelUpdateSettings(public_keys_dir=tmp / "model-keys", probation_rankings=5,
                                     probation_s=2.0, golden_runs=9, latency_budget_ms=10.0)
        (tmp / store).mkdir()
        envs[store] = make_env(tmp / store, tafeng_zip, broker.port, n_products=150,
                               n_members=10, store=store, hub=hub_link, models=models)
    w = World(tmp, hub, envs)
    try:
        w.cli("model-keygen", "--kid", KID)
        (tmp / "model-keys" / f"{KID}.key").chmod(0o600)
        w.ingest(list(synthetic_transactions(customers=80, products=150, days=70, seed=11)))
        for store in STORES:
            w.edges[store] = start_edge(envs[store].settings, tmp / store)
        yield w
    finally:
        for edge in w.edges.values():
            edge.stop()
        hub.stop()


def test_train_rollout_canary_all_and_rollback_under_checkin_load(world: World) -> None:
    started = time.perf_counter()
    first = world.cli("train-model", "--force")
    train_wall_s = time.perf_counter() - started
    v1 = first["version"]
    assert first["published"] and first["candidate"]["users"] > 20
    assert {"recall@10", "ndcg@10"} <= set(first["baseline"])  # both figures recorded
    # the same data again: the candidate does not beat v1, so nothing is published
    again = world.cli("train-model")
    assert not again["published"] and again["baseline_version"] == v1
    default = world.edge_status("store-a")["model_version"]

    load = CheckinLoad(world)
    load.start()
    try:
        wait_until(lambda: len(load.answers) >= 20, TIMEOUT)
        world.cli("rollout", v1, "--canary", "store-a")
        world.wait_state("store-a", v1, "active")
        world.wait_running("store-a", v1)
        assert world.edge_status("store-b")["model_version"] == default  # not a canary
        assert world.rollout_state()["store-b"]["state"] == "unassigned"
        world.cli("rollout", v1, "--all")
        world.wait_state("store-b", v1, "active")

        # newer baskets arrive, a second model is trained and rolled out the same way
        world.ingest(_later_baskets())
        second = world.cli("train-model", "--force")
        v2 = second["version"]
        assert v2 != v1
        world.cli("rollout", v2, "--canary", "store-b")
        world.wait_state("store-b", v2, "active")
        assert world.edge_status("store-a")["model_version"] == v1
        world.cli("rollout", v2, "--all")
        world.wait_state("store-a", v2, "active")

        # rollback: each store back to the version it ran before (kept on disk: no download)
        back = world.cli("rollback")
        assert sorted(back["rolled_back"]) == list(STORES)
        for store in STORES:
            world.wait_state(store, v1, "active")
            world.wait_running(store, v1)
            # the hub page sees it too: the edge's heartbeat names the model it runs
            wait_until(lambda s=store: world.rollout_state()[s]["running"] == v1, TIMEOUT, 0.05)
        answered_before_stop = len(load.answers)
        wait_until(lambda: len(load.answers) >= answered_before_stop + 10, TIMEOUT)
    finally:
        load.halt.set()
        load.join(15)

    failures = [a for a in load.answers if a[1] != 200 or a[3] != "model"]
    assert not failures, failures[:5]
    assert load.versions("store-a") == [default, v1, v2, v1]
    assert load.versions("store-b") == [default, v1, v2, v1]
    swaps = [ms for s in STORES for ms in world.edge_status(s)["model_update"]["recent_swaps_ms"]]
    assert len(swaps) == 6  # default -> v1 -> v2 -> v1 in each store
    status = world.edge_status("store-a")["model_update"]
    assert status["active"] == v1 and status["previous"] == v2
    assert status["last_outcome"]["outcome"] == "active"
    print(f"\n[model rollout] train-model wall {train_wall_s:.1f}s (fit {first['train_s']}s on "
          f"{first['train_rows']} rows), check-ins answered {len(load.answers)} "
          f"(failures {len(failures)}), swaps (load beside + golden check + swap) "
          f"{min(swaps):.1f}-{max(swaps):.1f} ms, median {sorted(swaps)[len(swaps) // 2]:.1f}")

    # a restart comes up on the last good bundle, even with the hub unreachable
    edge = world.edges["store-a"]
    edge.stop()
    offline = world.envs["store-a"].settings.model_copy(update={
        "hub": world.envs["store-a"].settings.hub.model_copy(
            update={"hub_url": "http://127.0.0.1:9"})})
    restarted = start_edge(offline, world.tmp / "store-a")
    try:
        assert httpx.get(f"{restarted.url}/v1/status").json()["model_version"] == v1
    finally:
        restarted.stop()
        world.edges["store-a"] = start_edge(world.envs["store-a"].settings, world.tmp / "store-a")


def _later_baskets() -> list[Any]:
    """Two more weeks of baskets of the same customer ids, after the first history."""
    first_end = max(r.timestamp for r in synthetic_transactions(
        customers=80, products=150, days=70, seed=11))
    return [replace(r, basket_id=f"late-{r.basket_id}")
            for r in synthetic_transactions(customers=80, products=150, days=84, seed=12)
            if r.timestamp > first_end + DAY]


def test_tampered_unsigned_and_slow_bundles_are_refused_and_the_old_model_serves(
        world: World) -> None:
    store, env = "store-a", world.envs["store-a"]
    serving = world.edge_status(store)["model_version"]
    rogue = private_key_pem(generate_signing_key())
    context = open_context(world.hub.settings)  # what publish-model does, in-process
    try:
        for version in ("t-corrupt", "t-unsigned", "t-wrong-key", "t-unknown-key"):
            publish_bundle(context.db, world.hub.settings,
                           copy_bundle(world.tmp / version, version), force=True)
        publish_bundle(context.db, world.hub.settings,
                       slow_bundle(world.tmp / "t-slow", "t-slow"), force=True)
    finally:
        context.db.close()
    db = world.hub.settings.db_path
    archive = bytearray(stored_archive(db, "t-corrupt"))
    archive[len(archive) // 2] ^= 0xFF  # a flipped byte on the hub's disk
    tamper(db, "t-corrupt", archive=bytes(archive))
    tamper(db, "t-unsigned", signature="")
    forged = sign(rogue, "t-wrong-key", _sha(db, "t-wrong-key"))
    tamper(db, "t-wrong-key", signature=forged)  # same key id, someone else's key
    tamper(db, "t-unknown-key", key_id="model-rogue")

    expected = {"t-corrupt": ("refused", "sha256_mismatch"),
                "t-unsigned": ("refused", "unsigned"),
                "t-wrong-key": ("refused", "bad_signature"),
                "t-unknown-key": ("refused", "unknown_key"),
                "t-slow": ("rolled_back", "too_slow")}
    with world.hub.admin() as admin, httpx.Client(timeout=10) as kiosk:
        for version, (outcome, reason) in expected.items():
            admin.post(f"/v1/models/{version}/rollout",
                       json={"stores": [store]}).raise_for_status()
            row = world.wait_state(store, version, outcome)
            assert row["last_report"]["reason"] == reason, row
            status = world.edge_status(store)
            assert status["model_version"] == serving
            assert status["model_update"]["last_outcome"]["version"] == version
            payload = {"v": 1, "event_id": new_id(), "ts": time.time(),
                       "token": env.token(f"m-{secrets.token_hex(8)}", store=store)}
            card = kiosk.post(f"{world.edges[store].url}/v1/checkin", json=payload).json()["card"]
            assert card["source"] == "model" and card["model_version"] == serving
    slow = world.rollout_state()[store]["last_report"]
    assert slow["p50_ms"] > world.envs[store].settings.models.latency_budget_ms
    kept = {p.name for p in (world.tmp / store / "bundles").iterdir() if p.is_dir()}
    assert not kept & set(expected)  # refused bundles are not kept on the device


def _sha(db: Path, version: str) -> str:
    from models.signing import archive_sha256

    return archive_sha256(stored_archive(db, version))
