"""The edge's hot swap in one process, on real bundles and onnxruntime: the watch over a
new bundle, a model failing mid-visit, the start-up choice, outcome reports surviving a
hub outage. The same paths on real processes: tests/test_model_rollout.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edge.metrics import EdgeMetrics
from edge.model_state import (
    ARCHIVE_FILE,
    ASSIGNMENT_FILE,
    STATE_FILE,
    BundleWatch,
    ModelState,
    startup_bundle_dir,
)
from edge.model_update import ModelLink, ModelUpdater, parse_assignment
from edge.ranking import Ranker
from edge.settings import EdgeSettings, HubLinkSettings, ModelUpdateSettings
from edge.store import CatalogItem
from edge.sync_http import HubUnavailable
from hub.tokens import generate_signing_key, private_key_pem, public_key_pem
from models.bundle import DEFAULT_BUNDLE_DIR, Bundle, load_bundle
from models.features import Context, CustomerHistory
from models.golden import attach_golden
from models.signing import BundleRefused, archive_sha256, pack_bundle, sign, unpack_archive
from tests.model_env import copy_bundle

KID = "model-k1"
ITEMS = [CatalogItem(f"p{i}", f"item {i}", "c", 1.0 + i, 5, None) for i in range(30)]


class BrokenSession:
    """An ORT session that loaded fine and fails on every call (e.g. a kernel bug)."""

    def run(self, *_: Any) -> Any:
        raise RuntimeError("kernel failure")


def _rank(ranker: Ranker) -> Any:
    return ranker.rank(CustomerHistory.empty(), ITEMS, Context(timestamp=1.7e9), pool=10)


def _watch(ranker: Ranker, new: Bundle, **kw: Any) -> BundleWatch:
    args = {"budget_ms": 50.0, "rankings": 3, "probation_s": 60.0, "max_errors": 2,
            "started": 0.0, **kw}
    watch = BundleWatch(ranker, new, ranker.bundle, **args)
    ranker.watch = watch
    ranker.swap(new)
    return watch


@pytest.fixture()
def ranker() -> Ranker:
    return Ranker(EdgeMetrics(), DEFAULT_BUNDLE_DIR)


def test_a_model_failing_mid_visit_is_swapped_back_and_the_visit_still_gets_the_old_one(
        ranker: Ranker) -> None:
    old = ranker.bundle
    assert old is not None
    broken = Bundle(old.path, {**old.manifest, "version": "broken"}, "broken", BrokenSession())
    watch = _watch(ranker, broken)
    ranked = _rank(ranker)
    assert ranked.source == "model" and ranked.model_version == old.version
    assert len(ranked.candidates) == 10
    assert ranker.bundle is old and watch.verdict == ("rolled_back", "runtime_error")


def test_watch_judges_latency_and_errors_of_live_rankings(ranker: Ranker) -> None:
    old = ranker.bundle
    new = load_bundle(DEFAULT_BUNDLE_DIR)
    fast = _watch(ranker, new)
    for _ in range(3):
        assert _rank(ranker).model_version == new.version
    assert fast.verdict == ("active", None) and fast.live_p50_ms is not None
    fast(new, 0.001, False)  # settled: one error is tolerated ...
    assert ranker.bundle is new
    fast(new, 0.001, True)
    fast(new, 0.001, False)  # ... and the count restarts after a success
    assert ranker.bundle is new
    fast(new, 0.001, False)  # ... two in a row are not
    assert ranker.bundle is old and fast.verdict == ("rolled_back", "runtime_error")

    slow = _watch(ranker, new, budget_ms=1.0)
    for _ in range(3):
        slow(new, 0.004, True)  # 4 ms per call against a 1 ms budget
    assert slow.verdict == ("rolled_back", "too_slow") and ranker.bundle is old
    slow(new, 0.0, True)  # calls after the verdict change nothing
    assert slow.verdict == ("rolled_back", "too_slow")


def test_a_quiet_store_settles_after_the_probation_time(ranker: Ranker) -> None:
    new = load_bundle(DEFAULT_BUNDLE_DIR)
    watch = _watch(ranker, new, probation_s=5.0)
    watch.expire(4.0)
    assert watch.verdict is None
    watch.expire(5.0)
    assert watch.verdict == ("active", None) and ranker.bundle is new


def _signed(root: Path, version: str, private_pem: bytes) -> tuple[dict[str, Any], bytes]:
    bundle = copy_bundle(root / f"src-{version}", version)
    attach_golden(bundle)
    data = pack_bundle(bundle)
    sha = archive_sha256(data)
    return ({"version": version, "sha256": sha, "signature": sign(private_pem, version, sha),
             "key_id": KID, "url": f"/v1/models/{version}/bundle"}, data)


def _install(directory: Path, assignment: dict[str, Any], data: bytes) -> None:
    unpack_archive(data, directory / assignment["version"], version=assignment["version"])
    (directory / assignment["version"] / ARCHIVE_FILE).write_bytes(data)
    (directory / assignment["version"] / ASSIGNMENT_FILE).write_text(json.dumps(assignment))


def test_start_up_uses_the_last_good_bundle_verified_again(tmp_path: Path) -> None:
    key = generate_signing_key()
    trusted = {KID: public_key_pem(key)}
    settings = EdgeSettings(db_path=tmp_path / "edge.db")
    bundles = tmp_path / "bundles"
    a1, d1 = _signed(tmp_path, "v1", private_key_pem(key))
    a2, d2 = _signed(tmp_path, "v2", private_key_pem(key))
    _install(bundles, a1, d1)
    _install(bundles, a2, d2)
    assert startup_bundle_dir(settings, trusted) is None  # no state yet: shipped bundle
    ModelState(active="v2", previous="v1").save(bundles)
    assert startup_bundle_dir(settings, trusted) == bundles / "v2"
    assert startup_bundle_dir(settings, {}) is None  # keys gone: nothing is trusted
    manifest = bundles / "v2" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"a"', '"a" '))  # edited on disk
    assert startup_bundle_dir(settings, trusted) == bundles / "v1"
    shutil.rmtree(bundles / "v1")
    assert startup_bundle_dir(settings, trusted) is None
    (bundles / STATE_FILE).write_text("{not json")
    assert ModelState.load(bundles) == ModelState()


class MemoryHub:
    """The hub's three model endpoints in memory; ``down`` makes every call fail."""

    def __init__(self, assignment: dict[str, Any] | None, data: bytes) -> None:
        self.assigned, self.data, self.down = assignment, data, False
        self.reports: list[dict[str, Any]] = []

    def assignment(self) -> dict[str, Any] | None:
        if self.down:
            raise HubUnavailable("down")
        return self.assigned

    def download(self, url: str, max_bytes: int) -> bytes:
        return self.data

    def report(self, body: dict[str, Any]) -> None:
        if self.down:
            raise HubUnavailable("down")
        self.reports.append(body)

    def close(self) -> None:
        pass


def test_outcomes_are_kept_until_the_hub_takes_them(tmp_path: Path, ranker: Ranker) -> None:
    key, rogue = generate_signing_key(), generate_signing_key()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / f"{KID}.pub").write_bytes(public_key_pem(key))
    assignment, data = _signed(tmp_path, "v9", private_key_pem(rogue))  # not our key
    settings = EdgeSettings(
        db_path=tmp_path / "edge.db",
        hub=HubLinkSettings(hub_url="http://127.0.0.1:9", store_key="k" * 16),
        models=ModelUpdateSettings(public_keys_dir=keys))
    hub = MemoryHub(assignment, data)
    updater = ModelUpdater(settings, ranker, hub, lambda: {KID: public_key_pem(key)},
                           clock=lambda: 0.0)
    before = ranker.model_version
    updater.step()  # refused (bad signature); the report is queued and sent next time
    assert ranker.model_version == before
    assert updater.state.last_outcome["reason"] == "bad_signature"
    hub.down = True
    updater.step()
    assert hub.reports == [] and len(ModelState.load(updater.dir).pending_reports) == 1
    restarted = ModelUpdater(settings, ranker, hub, lambda: {}, clock=lambda: 0.0)
    hub.down = False
    restarted.step()
    assert [r["outcome"] for r in hub.reports] == ["refused"]
    assert ModelState.load(updater.dir).pending_reports == []
    restarted.step()  # the same assignment is not tried again
    assert len(hub.reports) == 1 and not (updater.dir / "v9").exists()


def test_assignments_and_bundle_urls_are_checked() -> None:
    with pytest.raises(HubUnavailable):
        parse_assignment({"version": "../../etc", "sha256": "x", "url": "/x"})
    with pytest.raises(HubUnavailable):
        parse_assignment(["not", "an", "object"])
    link = ModelLink("http://127.0.0.1:8090", store="s1", store_key="k" * 16, timeout_s=1.0)
    try:
        assert link.bundle_path("/v1/models/v1/bundle") == "/v1/models/v1/bundle"
        assert link.bundle_path("http://127.0.0.1:8090/v1/models/v1/bundle?x=1") == (
            "/v1/models/v1/bundle?x=1")
        with pytest.raises(BundleRefused) as caught:  # the store key never leaves the hub
            link.bundle_path("http://elsewhere.example/v1/models/v1/bundle")
        assert caught.value.reason == "bad_assignment"
    finally:
        link.close()
