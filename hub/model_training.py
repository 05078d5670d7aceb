"""``train-model`` / ``publish-model``: the chain's own ranker, published only when it wins.

The hub's purchase lines (every store's POS baskets, members and anonymous) become canonical
transactions; the last ``holdout_days`` are kept apart (``models.holdout``), a candidate is
trained on the rest with the ``models`` code, and candidate and current model answer the same
held-out questions. Only a winner is signed and stored (``--force`` overrides, e.g. for the
first model); both figures are recorded either way. What is published is exactly what was
evaluated: no refit after the comparison.

Signing uses the *model-signing* key (``models.signing_keys_dir``, ``model-keygen``), never
a check-in token key: the two directories must differ.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub import model_registry as registry
from hub.settings import HubSettings
from hub.storage import HubDB
from hub.tokens import check_kid, load_private_key
from models.bundle import DEFAULT_BUNDLE_DIR, Bundle, BundleError, load_bundle
from models.golden import attach_golden
from models.holdout import Holdout, evaluate_on, is_better, split_recent
from models.signing import archive_sha256, pack_bundle, sign, unpack_archive
from models.train import TrainConfig, train_bundle
from models.transactions import Transaction

logger = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Nothing to train on, no usable signing key, a bad bundle: said in one line."""


@dataclass(frozen=True)
class ModelSigner:
    kid: str
    private_pem: bytes

    @classmethod
    def from_settings(cls, settings: HubSettings) -> ModelSigner:
        cfg = settings.models
        directory = Path(cfg.signing_keys_dir)
        if directory.resolve() == Path(settings.tokens.keys_dir).resolve():
            raise TrainingError("models.signing_keys_dir must not be the token keys directory")
        if cfg.signing_kid:
            path = directory / f"{check_kid(cfg.signing_kid)}.key"
        else:
            keys = sorted(directory.glob("*.key"))
            if len(keys) != 1:
                raise TrainingError(f"{len(keys)} model-signing keys in {directory}: run "
                                    "`storeside-hub model-keygen` or set models.signing_kid")
            path = keys[0]
        try:
            pem = path.read_bytes()
            load_private_key(pem)
        except (OSError, ValueError) as exc:
            raise TrainingError(f"model-signing key {path} unusable: {exc}") from exc
        return cls(path.stem, pem)


def training_rows(db: HubDB) -> list[Transaction]:
    """Every purchase line the hub holds; an anonymous basket is its own 'customer' (it
    still teaches popularity and co-purchase, never a personal history)."""
    with db.read() as conn:
        rows = conn.execute(
            "SELECT subject, store, basket_id, ts, product_id, quantity, unit_price, category "
            "FROM purchases ORDER BY ts, id").fetchall()
    return [
        Transaction(customer_id=subject or f"anon:{store}:{basket}", basket_id=f"{store}:{basket}",
                    timestamp=float(ts), product_id=product, quantity=float(qty),
                    price=None if price is None else float(price), category=category,
                    store_id=store)
        for subject, store, basket, ts, product, qty, price, category in rows
    ]


def _baseline(db: HubDB, workdir: Path) -> tuple[str, Bundle]:
    """The latest published model, else the bundle every store ships with."""
    current = registry.latest(db)
    if current is None:
        shipped = load_bundle(DEFAULT_BUNDLE_DIR)
        return f"default:{shipped.version}", shipped
    data = registry.archive(db, current.version)
    assert data is not None
    unpack_archive(data, workdir / "current", version=current.version)
    return current.version, load_bundle(workdir / "current")


def evaluate_and_publish(
    db: HubDB, settings: HubSettings, bundle_dir: Path, holdout: Holdout, *,
    force: bool, signer: ModelSigner | None = None, extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Candidate vs. current on ``holdout``; sign and store the winner. Returns the
    recorded summary (``published`` says what happened)."""
    cfg = settings.models
    signer = signer or ModelSigner.from_settings(settings)
    manifest = attach_golden(bundle_dir)  # the scores every edge must reproduce
    try:
        candidate = load_bundle(bundle_dir)
    except BundleError as exc:
        raise TrainingError(f"candidate bundle unusable: {exc}") from exc
    k = cfg.k
    with tempfile.TemporaryDirectory() as tmp:
        baseline_version, baseline = _baseline(db, Path(tmp))
        started = time.perf_counter()
        cand_figures = evaluate_on(holdout, candidate, k)
        base_figures = evaluate_on(holdout, baseline, k)
        eval_s = time.perf_counter() - started
    wins = is_better(cand_figures, base_figures, k, cfg.min_gain)
    summary: dict[str, Any] = {
        "version": candidate.version, "holdout_days": cfg.holdout_days,
        "holdout_users": cand_figures["users"], "candidate": cand_figures,
        "baseline_version": baseline_version, "baseline": base_figures,
        "wins": wins, "forced": force and not wins, "published": wins or force,
        "evaluate_s": round(eval_s, 2), **(extra or {}),
    }
    if summary["published"]:
        data = pack_bundle(bundle_dir)
        sha = archive_sha256(data)
        registry.publish(db, version=candidate.version, sha256=sha,
                         signature=sign(signer.private_pem, candidate.version, sha),
                         key_id=signer.kid, archive=data, manifest=manifest,
                         evaluation=summary)
        summary["sha256"] = sha
    registry.record_training(db, summary)
    logger.info("model %s: recall@%d %.4f vs %s %.4f -> %s", candidate.version, k,
                cand_figures[f"recall@{k}"], baseline_version, base_figures[f"recall@{k}"],
                "published" if summary["published"] else "not published")
    return summary


def train_model(db: HubDB, settings: HubSettings, *, force: bool = False) -> dict[str, Any]:
    """The whole ``train-model`` command."""
    cfg = settings.models
    signer = ModelSigner.from_settings(settings)  # fail before training, not after
    rows = training_rows(db)
    holdout = split_recent(rows, cfg.holdout_days)
    if not holdout.history:
        raise TrainingError(f"no purchase history before the last {cfg.holdout_days} days")
    config = TrainConfig(num_trees=cfg.num_trees, num_leaves=cfg.num_leaves,
                         threads=cfg.threads, seed=cfg.seed, max_queries=cfg.max_queries)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        try:
            bundle_dir = train_bundle(holdout.history, Path(tmp) / "candidate", config,
                                      source=f"hub purchases ({len(holdout.history)} rows)",
                                      progress=False)
        except ValueError as exc:
            raise TrainingError(f"cannot train: {exc}") from exc
        train_s = time.perf_counter() - started
        return evaluate_and_publish(
            db, settings, bundle_dir, holdout, force=force, signer=signer,
            extra={"rows": len(rows), "train_rows": len(holdout.history),
                   "train_s": round(train_s, 2), "source": "train-model"},
        )


def publish_bundle(db: HubDB, settings: HubSettings, bundle_dir: Path, *,
                   force: bool = False) -> dict[str, Any]:
    """``publish-model``: a bundle built elsewhere goes through the same gate."""
    holdout = split_recent(training_rows(db), settings.models.holdout_days)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "bundle"
        shutil.copytree(bundle_dir, copy)  # the golden record is written into the copy
        return evaluate_and_publish(db, settings, copy, holdout, force=force,
                                    extra={"source": f"publish-model {bundle_dir}"})
