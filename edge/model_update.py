"""The edge's side of a model rollout: learn the assignment, fetch, verify, try, swap, report.

A thread of its own polls ``GET /v1/stores/{store}/model``. A new assignment is downloaded,
its sha256 and Ed25519 signature checked (``models.signing``), unpacked into
``<bundles_dir>/<version>/`` and loaded BESIDE the running bundle; the golden-input check
(``models.golden``) runs there, off the worker thread, so visits keep being ranked by the
old model meanwhile. Only then is the ranker's reference swapped: the worker thread is the
only ranker user, so each visit is ranked by one model entirely. A ``BundleWatch`` then
judges the new bundle on live rankings and swaps back by itself on errors or when it is
slower than the budget. Every outcome is persisted first (``edge.model_state``), then
reported to the hub (retried until the hub answered).

Outcomes: ``refused`` = the bundle must never run (unsigned, unknown key, bad signature,
tampered, corrupt, golden scores differ); ``rolled_back`` = valid, but not good enough
here (too slow, errors while ranking); ``active`` = serving.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from edge.model_state import (
    ARCHIVE_FILE,
    ASSIGNMENT_FILE,
    BundleWatch,
    ModelState,
    bundles_dir,
    kept_assignment,
    verify_on_disk,
    write_json,
)
from edge.ranking import Ranker
from edge.settings import EdgeSettings
from edge.store_key import StoreKeySource
from edge.sync_http import HubLink, HubRefused, HubUnavailable
from edge.sync_plan import Backoff
from models.bundle import BundleError, load_bundle
from models.golden import golden_check
from models.signing import BundleRefused, check_version, unpack_archive, verify

logger = logging.getLogger(__name__)

TICK_S = 0.1  # how often a bundle on probation is looked at (no network involved)
MAX_GIVEN_UP = 50  # versions remembered as refused / rolled back (not tried again)


class HubModelApi(Protocol):
    def assignment(self) -> dict[str, Any] | None: ...
    def download(self, url: str, max_bytes: int) -> bytes: ...
    def report(self, body: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class ModelLink(HubLink):
    """The model endpoints of the contract on the sync's hub link: same store key, same
    failure kinds (``HubUnavailable`` backs off, ``HubRefused`` is the hub saying no)."""

    def __init__(self, hub_url: str, *, store: str, store_key: str | StoreKeySource,
                 timeout_s: float) -> None:
        super().__init__(hub_url, store=store, store_key=store_key, timeout_s=timeout_s)
        self._origin = urlsplit(hub_url)[:2]

    def bundle_path(self, url: str) -> str:
        """The assignment's URL as a path on the hub: the store key goes nowhere else."""
        parts = urlsplit(url)
        if (parts.scheme or parts.netloc) and parts[:2] != self._origin:
            raise BundleRefused("bad_assignment", f"bundle url {url!r} is not on the hub")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def assignment(self) -> dict[str, Any] | None:
        body = self._json("GET", f"{self._prefix}/model")
        return None if body is None else parse_assignment(body)

    def download(self, url: str, max_bytes: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            with self._client.stream("GET", self.bundle_path(url)) as response:
                if response.status_code != 200:
                    raise HubUnavailable(f"bundle download: HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise BundleRefused("too_large", f"bundle over {max_bytes} bytes")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"bundle download: {type(exc).__name__}") from exc
        return b"".join(chunks)

    def report(self, body: dict[str, Any]) -> None:
        try:
            self._json("POST", f"{self._prefix}/model/report", json=body)
        except HubRefused as exc:  # the hub will never take it: do not retry forever
            logger.warning("hub refused the model report on %s: %s", body.get("version"), exc)


def parse_assignment(body: Any) -> dict[str, Any]:
    """The assignment JSON, checked enough to be safe to act on (version is a dir name)."""
    if not isinstance(body, dict):
        raise HubUnavailable("assignment is not an object")
    try:
        out = {
            "version": check_version(body.get("version")),
            "sha256": str(body["sha256"]),
            "signature": body.get("signature") or None,
            "key_id": body.get("key_id") or None,
            "url": str(body["url"]),
        }
    except (KeyError, ValueError) as exc:
        raise HubUnavailable(f"bad assignment: {exc}") from exc
    return out


class ModelUpdater:
    """One thread: poll, try a new bundle, settle it, report. Never blocks the worker."""

    def __init__(
        self,
        settings: EdgeSettings,
        ranker: Ranker,
        api: HubModelApi,
        trusted_keys: Callable[[], dict[str, bytes]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = settings.models
        self.ranker = ranker
        self.api = api
        self.trusted_keys = trusted_keys
        self.clock = clock
        self.dir = bundles_dir(settings)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = ModelState.load(self.dir)
        self.poll_s = settings.hub.poll_interval_s
        self.backoff = Backoff(settings.hub.backoff_initial_s, settings.hub.backoff_max_s,
                               settings.hub.backoff_jitter)
        self.threads = settings.ranking.intra_op_threads
        self.phase = "idle"
        self.watch: BundleWatch | None = None
        self._watch_meta: dict[str, Any] = {}
        self._reported: tuple[str, str | None] | None = None
        self.timings: dict[str, float] = {}  # of the last attempt
        self.swaps_ms: deque[float] = deque(maxlen=20)  # load beside + golden + swap
        self._next_poll = 0.0
        self._failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-update", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                logger.exception("model update step failed")
            self._stop.wait(TICK_S)

    def status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "active": self.state.active,
            "previous": self.state.previous,
            "last_outcome": self.state.last_outcome,
            "pending_reports": len(self.state.pending_reports),
            "timings_ms": dict(self.timings),
            "recent_swaps_ms": list(self.swaps_ms),
        }

    # ------------------------------------------------------------------ one round
    def step(self) -> None:
        now = self.clock()
        self._settle(now)
        if now < self._next_poll:
            return
        try:
            self._flush_reports()
            assignment = self.api.assignment()
            if assignment is not None and (self.watch is None or self.watch.verdict):
                self._consider(assignment)
            self._failures, self._next_poll = 0, self.clock() + self.poll_s
        except (HubUnavailable, HubRefused) as exc:
            self._failures += 1
            delay = self.backoff.delay(self._failures, random.random())
            self._next_poll = self.clock() + delay
            logger.warning("model update: hub unavailable (%s); retry in %.1fs", exc, delay)

    def _consider(self, a: dict[str, Any]) -> None:
        version, sha = a["version"], a["sha256"]
        if version == self.ranker.model_version or self.state.given_up.get(version) == sha:
            return
        self.timings = {}
        golden_p50: float | None = None
        try:
            self.phase = "fetching"
            dest = self._fetch(a)
            self.phase = "checking"
            started = time.perf_counter()
            try:
                bundle = load_bundle(dest, intra_op_threads=self.threads)
            except BundleError as exc:
                raise BundleRefused("bad_bundle", str(exc)) from exc
            result = golden_check(bundle, budget_ms=self.cfg.latency_budget_ms,
                                  tolerance=self.cfg.golden_tolerance, runs=self.cfg.golden_runs)
            golden_p50 = result.p50_ms or None
            if not result.ok:
                raise BundleRefused(result.reason or "golden", result.detail)
            watch = BundleWatch(
                self.ranker, bundle, self.ranker.bundle,
                budget_ms=self.cfg.latency_budget_ms, rankings=self.cfg.probation_rankings,
                probation_s=self.cfg.probation_s, max_errors=self.cfg.max_consecutive_errors,
                started=self.clock(),
            )
            self.ranker.watch = watch  # watching first: it ignores bundles but its own
            self.ranker.swap(bundle)
            self.timings["swap_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
            self.swaps_ms.append(self.timings["swap_ms"])
            self.timings["golden_p50_ms"] = round(result.p50_ms, 3)
        except BundleRefused as exc:
            self.phase = "idle"
            outcome = "rolled_back" if exc.reason == "too_slow" else "refused"
            self._give_up(version, sha, outcome, exc.reason, exc.detail, golden_p50)
            return
        self.watch, self._watch_meta, self._reported = watch, dict(a), None
        self.phase = "probation"
        logger.info("model %s swapped in (load + golden check + swap %.1f ms); on probation",
                    version, self.timings["swap_ms"])

    def _fetch(self, a: dict[str, Any]) -> Path:
        """``<bundles_dir>/<version>/`` holding exactly the signed archive's files."""
        dest = self.dir / a["version"]
        trusted = self.trusted_keys()
        if dest.is_dir():
            try:
                verify_on_disk(dest, trusted)
                if kept_assignment(dest).get("sha256") == a["sha256"]:
                    return dest  # e.g. a rollback to a version kept on disk: no download
            except BundleRefused as exc:
                logger.warning("kept copy of %s unusable (%s); downloading", a["version"], exc)
        started = time.perf_counter()
        data = self.api.download(a["url"], self.cfg.max_bundle_bytes)
        self.timings["download_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
        verify(data, version=a["version"], sha256=a["sha256"], signature=a["signature"],
               key_id=a["key_id"], trusted=trusted)
        incoming = self.dir / f".incoming-{uuid.uuid4().hex[:8]}"
        try:
            unpack_archive(data, incoming, version=a["version"])
            (incoming / ARCHIVE_FILE).write_bytes(data)
            write_json(incoming / ASSIGNMENT_FILE, a)
            if dest.exists():
                shutil.rmtree(dest)
            incoming.rename(dest)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return dest

    # ------------------------------------------------------------------ outcomes
    def _settle(self, now: float) -> None:
        watch = self.watch
        if watch is None:
            return
        watch.expire(now)
        if watch.verdict is None or watch.verdict == self._reported:
            return
        outcome, reason = watch.verdict
        self._reported = watch.verdict
        version, sha = watch.new.version, self._watch_meta["sha256"]
        p50 = watch.live_p50_ms if watch.live_p50_ms is not None else self.timings.get(
            "golden_p50_ms")
        if outcome == "active":
            if self.state.active != version:
                self.state.previous = self.state.active
            self.state.active = version
            self.state.record(_report(version, "active", None, "", p50))
            self.state.save(self.dir)
            self.phase = "idle"
            logger.info("model %s active (live p50 %s ms)", version, p50)
        else:
            self.ranker.watch, self.watch = None, None
            self.phase = "idle"
            if self.state.active == version:  # failed after settling: back to what runs
                prev = watch.previous
                self.state.active = prev.version if prev is not None else None
            self._give_up(version, sha, outcome, reason or "", watch.detail, p50)
        self._prune()

    def _give_up(self, version: str, sha: str, outcome: str, reason: str, detail: str,
                 p50: float | None) -> None:
        logger.warning("model %s %s: %s %s", version, outcome, reason, detail)
        given_up = {**self.state.given_up, version: sha}
        self.state.given_up = dict(list(given_up.items())[-MAX_GIVEN_UP:])  # newest kept
        self.state.record(_report(version, outcome, reason, detail, p50))
        self.state.save(self.dir)
        if version not in (self.state.active, self.state.previous):
            shutil.rmtree(self.dir / version, ignore_errors=True)
        self._next_poll = 0.0  # report at once

    def _flush_reports(self) -> None:
        sent = 0
        for body in list(self.state.pending_reports):
            self.api.report(body)  # HubUnavailable stops here; the rest waits
            sent += 1
            self.state.pending_reports = self.state.pending_reports[1:]
        if sent:
            self.state.save(self.dir)

    def _prune(self) -> None:
        """Keep the active and previous bundles and the newest few others."""
        keep = {self.state.active, self.state.previous}
        others = sorted((p for p in self.dir.iterdir() if p.is_dir() and p.name not in keep
                         and not p.name.startswith(".")),
                        key=lambda p: p.stat().st_mtime, reverse=True)
        for path in others[max(0, self.cfg.keep_bundles - len(keep - {None})):]:
            shutil.rmtree(path, ignore_errors=True)


def _report(version: str, outcome: str, reason: str | None, detail: str,
            p50: float | None) -> dict[str, Any]:
    """The contract's report body, plus ``detail`` and a ``report_id`` (retries count once)."""
    return {"version": version, "outcome": outcome, "reason": reason, "detail": detail[:300],
            "p50_ms": round(p50, 3) if p50 is not None else None,
            "report_id": uuid.uuid4().hex, "at": time.time()}
