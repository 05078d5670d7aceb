"""What the edge remembers about model bundles, and the watch over a freshly swapped one.

``state.json`` in the bundles directory names the active and the previous (last good)
version, the versions this store gave up on, and the outcome reports the hub has not
acknowledged yet. It lives beside the bundles it names (written atomically), so wiping the
directory forgets both together, and a restart comes up on the last good bundle without
asking the hub. Each ``<bundles_dir>/<version>/`` keeps the signed archive and its
assignment, so a bundle is verified again at start-up, not trusted because it is on disk.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.ranking import Ranker
from edge.settings import EdgeSettings
from models.bundle import Bundle, _atomic_write
from models.signing import BundleRefused, read_archive, verify

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
ARCHIVE_FILE = "bundle.tar.gz"
ASSIGNMENT_FILE = "assignment.json"
MAX_PENDING_REPORTS = 50


def bundles_dir(settings: EdgeSettings) -> Path:
    return settings.models.bundles_dir or settings.db_path.parent / "bundles"


def write_json(path: Path, data: Any) -> None:
    """Atomically (temp file + rename): a crash leaves the old file or the new one."""
    _atomic_write(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def kept_assignment(directory: Path) -> dict[str, Any]:
    """The assignment a kept bundle was delivered with (``BundleRefused`` if unreadable)."""
    try:
        data = json.loads((directory / ASSIGNMENT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleRefused("missing", f"{directory}: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleRefused("missing", f"{directory}: assignment is not an object")
    return data


@dataclass
class ModelState:
    """The persisted part; every change is saved before it is acted on."""

    active: str | None = None
    previous: str | None = None
    given_up: dict[str, str] = field(default_factory=dict)  # version → archive sha256
    pending_reports: list[dict[str, Any]] = field(default_factory=list)
    last_outcome: dict[str, Any] | None = None

    @classmethod
    def load(cls, directory: Path) -> ModelState:
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError) as exc:  # unreadable: start from the default
            logger.error("model state %s unreadable, starting from the default model: %s",
                         path, exc)
            return cls()

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        write_json(directory / STATE_FILE, asdict(self))

    def record(self, report: dict[str, Any]) -> None:
        """Remember an outcome for /v1/status and queue it for the hub."""
        self.last_outcome = dict(report)
        self.pending_reports = [*self.pending_reports, report][-MAX_PENDING_REPORTS:]


def verify_on_disk(directory: Path, trusted: dict[str, bytes]) -> None:
    """The unpacked files are exactly what the kept signed archive holds."""
    assignment = kept_assignment(directory)
    try:
        data = (directory / ARCHIVE_FILE).read_bytes()
    except OSError as exc:
        raise BundleRefused("missing", f"{directory}: {exc}") from exc
    verify(data, version=assignment.get("version", ""), sha256=assignment.get("sha256", ""),
           signature=assignment.get("signature"), key_id=assignment.get("key_id"),
           trusted=trusted)
    for name, blob in read_archive(data).items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != blob:
            raise BundleRefused("tampered", f"{path} differs from the signed archive")


def startup_bundle_dir(settings: EdgeSettings, trusted: dict[str, bytes]) -> Path | None:
    """The last good bundle to start on (active, else previous), verified; None = the
    configured/default bundle."""
    directory = bundles_dir(settings)
    state = ModelState.load(directory)
    for version in (state.active, state.previous):
        if not version:
            continue
        candidate = directory / version
        try:
            verify_on_disk(candidate, trusted)
        except BundleRefused as exc:
            logger.error("kept bundle %s not usable (%s); trying the one before", version, exc)
            continue
        return candidate
    return None


class BundleWatch:
    """Judges a bundle just swapped in from the rankings it serves (``Ranker.watch``).

    Called on the worker thread after every model call. Until ``rankings`` calls (or
    ``probation_s``) have passed, one failed call or a p50 over the budget swaps the
    previous bundle back at once, on that same thread, so the visit being ranked is retried
    with the old model. Afterwards only ``max_errors`` failures in a row do. The updater
    thread reads ``verdict`` to persist and report.
    """

    def __init__(
        self, ranker: Ranker, new: Bundle, previous: Bundle | None, *, budget_ms: float,
        rankings: int, probation_s: float, max_errors: int, started: float,
    ) -> None:
        self.ranker, self.new, self.previous = ranker, new, previous
        self.budget_ms, self.rankings, self.max_errors = budget_ms, rankings, max_errors
        self.deadline = started + probation_s
        self.verdict: tuple[str, str | None] | None = None  # ("active"|"rolled_back", reason)
        self.detail = ""
        self.live_p50_ms: float | None = None
        self._times: list[float] = []
        self._errors_in_row = 0
        self._lock = threading.Lock()

    @property
    def rolled_back(self) -> bool:
        return self.verdict is not None and self.verdict[0] == "rolled_back"

    def __call__(self, bundle: Bundle, seconds: float, ok: bool) -> None:
        if bundle is not self.new or self.rolled_back:
            return
        if ok and self.verdict is not None:  # settled fast path: no lock, no list
            self._errors_in_row = 0
            return
        with self._lock:
            if not ok:
                self._errors_in_row += 1
                if self.verdict is None or self._errors_in_row >= self.max_errors:
                    self._roll_back("runtime_error", "the model failed while ranking a visit")
                return
            self._errors_in_row = 0
            self._times.append(seconds * 1000.0)
            if len(self._times) >= self.rankings:
                self._judge()

    def expire(self, now: float) -> None:
        """Called by the updater: a quiet store still settles after ``probation_s``."""
        if self.verdict is None and now >= self.deadline:
            with self._lock:
                if self.verdict is None:
                    self._judge()

    def _judge(self) -> None:
        if self._times:
            self.live_p50_ms = float(statistics.median(self._times))
        if self.live_p50_ms is not None and self.live_p50_ms > self.budget_ms:
            self._roll_back("too_slow", f"live p50 {self.live_p50_ms:.2f} ms > budget "
                                        f"{self.budget_ms:.2f} ms")
        else:
            self.verdict = ("active", None)

    def _roll_back(self, reason: str, detail: str) -> None:
        if self.ranker.bundle is self.new:
            self.ranker.swap(self.previous)
        self.detail = detail
        self.verdict = ("rolled_back", reason)
        logger.warning("model %s rolled back to %s: %s", self.new.version,
                       self.previous.version if self.previous else "none", detail)
