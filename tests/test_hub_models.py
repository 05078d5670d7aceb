"""The hub's model registry and endpoints on a real uvicorn + SQLite hub: who may fetch
what, rollout and rollback per store, reports, the publishing gate, key separation."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import model_registry as registry
from hub.cli import cmd_keygen
from hub.devtools import EmbeddedHub, hub_settings
from hub.model_training import ModelSigner, TrainingError, publish_bundle, train_model
from models.holdout import is_better, split_recent
from models.signing import verify
from models.synthetic import synthetic_transactions
from tests.model_env import copy_bundle

STORES = ("s1", "s2", "s3")


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    settings = hub_settings(tmp_path, models={"signing_keys_dir": str(tmp_path / "mkeys"),
                                              "threads": 1})
    cmd_keygen(argparse.Namespace(out=tmp_path / "mkeys", kid="model-k1"))
    with EmbeddedHub(tmp_path, stores=STORES, settings=settings) as running:
        yield running


def _publish(hub: EmbeddedHub, tmp: Path, version: str) -> dict:
    summary = publish_bundle(hub.context.db, hub.settings, copy_bundle(tmp / version, version),
                             force=True)
    assert summary["published"] and summary["forced"]  # nothing to learn from: forced
    return summary


def test_assignment_bundle_and_report_follow_the_contract(hub: EmbeddedHub,
                                                          tmp_path: Path) -> None:
    _publish(hub, tmp_path, "v1")
    s1, s2 = hub.store("s1"), hub.store("s2")
    assert s1.get("/v1/stores/s1/model").status_code == 204
    assert s1.post("/v1/models/v1/rollout", json={"all": True}).status_code == 403
    admin = hub.admin()
    assert admin.post("/v1/models/v1/rollout", json={"stores": ["s1"]}).json() == {
        "version": "v1", "assigned": ["s1"]}
    assignment = s1.get("/v1/stores/s1/model").json()
    assert set(assignment) == {"version", "sha256", "signature", "key_id", "url"}
    data = s1.get(assignment["url"]).content
    public = (tmp_path / "mkeys" / "model-k1.pub").read_bytes()
    verify(data, version="v1", sha256=assignment["sha256"], signature=assignment["signature"],
           key_id=assignment["key_id"], trusted={"model-k1": public})
    assert s2.get("/v1/stores/s2/model").status_code == 204  # not a canary
    assert s2.get("/v1/stores/s1/model").status_code == 403  # another store's assignment
    assert hub.client().get("/v1/stores/s1/model").status_code == 401
    assert hub.app_backend().get(assignment["url"]).status_code == 403
    assert s1.get("/v1/models/nope/bundle").json()["detail"]["reason"] == "unknown_version"

    report = {"version": "v1", "outcome": "refused", "reason": "bad_signature",
              "p50_ms": None, "report_id": "r-1"}
    assert s1.post("/v1/stores/s1/model/report", json=report).json() == {"recorded": True}
    assert s1.post("/v1/stores/s1/model/report", json=report).json() == {"recorded": False}
    bad = [{**report, "outcome": "great"}, {**report, "p50_ms": -1}, {**report, "version": 7},
           {**report, "version": "v404"}, ["x"]]
    for body in bad:
        answer = s1.post("/v1/stores/s1/model/report", json=body)
        assert answer.status_code == 422 and answer.json()["detail"]["reason"]
    assert s1.post("/v1/stores/s2/model/report", json=report).status_code == 403
    rows = {r["store"]: r for r in admin.get("/v1/models/rollout").json()["stores"]}
    assert rows["s1"]["state"] == "refused" and rows["s2"]["state"] == "unassigned"
    assert rows["s1"]["last_report"]["reason"] == "bad_signature"


def test_rollout_canary_all_and_rollback_per_store(hub: EmbeddedHub, tmp_path: Path) -> None:
    db = hub.context.db
    for version in ("v1", "v2", "v3"):
        _publish(hub, tmp_path, version)
    with pytest.raises(registry.RolloutError, match="unknown_store"):
        registry.rollout(db, "v1", ["s1", "nope"])
    with pytest.raises(registry.RolloutError, match="unknown_version"):
        registry.rollout(db, "v0", None)
    assert registry.rollout(db, "v1", None) == list(STORES)
    assert registry.rollout(db, "v1", None) == []  # already there: nothing changes
    assert registry.rollout(db, "v2", ["s2"]) == ["s2"]
    assert registry.rollout(db, "v3", ["s1", "s2"]) == ["s1", "s2"]
    status = {r["store"]: r for r in registry.rollout_status(db)}
    assert [(status[s]["assigned"], status[s]["previous"]) for s in STORES] == [
        ("v3", "v1"), ("v3", "v2"), ("v1", None)]
    assert registry.rollback(db) == {"rolled_back": ["s1", "s2"], "skipped": ["s3"]}
    assert [registry.assignment(db, s)["version"] for s in STORES] == ["v1", "v2", "v1"]
    with pytest.raises(registry.RolloutError, match="not_assigned"):
        registry.rollback(db, ["s9"])
    admin = hub.admin()
    answer = admin.post("/v1/models/v2/rollout", json={"stores": ["s1"], "all": True})
    assert answer.status_code == 422 and answer.json()["detail"]["reason"] == "stores_or_all"
    assert admin.post("/v1/models/rollback", json={"stores": ["s1"]}).json() == {
        "rolled_back": ["s1"], "skipped": []}
    listed = admin.get("/v1/models").json()
    assert [m["version"] for m in listed["models"]] == ["v3", "v2", "v1"]
    assert len(listed["trainings"]) == 3


def test_publishing_gate_and_key_separation(hub: EmbeddedHub, tmp_path: Path) -> None:
    rows = list(synthetic_transactions(customers=40, products=80, days=40, seed=3))
    holdout = split_recent(rows, 7)
    assert holdout.history and all(r.timestamp < holdout.cutoff for r in holdout.history)
    assert all(t for t in holdout.truths) and len(holdout.requests) == len(holdout.truths)
    assert all(req.timestamp >= holdout.cutoff for req in holdout.requests)
    assert is_better({"recall@10": 0.3, "ndcg@10": 0.1}, {"recall@10": 0.2, "ndcg@10": 0.2})
    assert not is_better({"recall@10": 0.2, "ndcg@10": 0.1}, {"recall@10": 0.2, "ndcg@10": 0.2})
    assert not is_better({"recall@10": 0.25, "ndcg@10": 0.3},
                         {"recall@10": 0.2, "ndcg@10": 0.2}, min_gain=0.1)
    unforced = publish_bundle(hub.context.db, hub.settings,
                              copy_bundle(tmp_path / "u1", "u1"), force=False)
    assert not unforced["published"] and registry.get(hub.context.db, "u1") is None
    with pytest.raises(TrainingError, match="no purchase history"):
        train_model(hub.context.db, hub.settings, force=True)
    same_dir = hub.settings.model_copy(update={"models": hub.settings.models.model_copy(
        update={"signing_keys_dir": hub.settings.tokens.keys_dir})})
    with pytest.raises(TrainingError, match="token keys"):
        ModelSigner.from_settings(same_dir)
    cmd_keygen(argparse.Namespace(out=tmp_path / "mkeys", kid="model-k2"))
    with pytest.raises(TrainingError, match="2 model-signing keys"):
        ModelSigner.from_settings(hub.settings)
