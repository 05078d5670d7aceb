"""Published model bundles and their rollout, store by store (tables of hub migration 20).

A published model is a signed archive kept in the hub's database (tens of kB), with the
figures that got it published. A store runs what its *assignment* names: ``rollout`` moves
named stores (canary) or all stores to a version and remembers the version each store came
from, so ``rollback`` is per store and needs no bookkeeping elsewhere. Edges report what
happened (active / rolled_back / refused), and ``rollout_status`` puts assignment, report
and heartbeat side by side for the hub page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hub.storage import HubDB

OUTCOMES = ("active", "rolled_back", "refused")
BUNDLE_PATH = "/v1/models/{version}/bundle"


class RolloutError(ValueError):
    """A rollout/rollback that cannot be done (unknown version or store); says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Published:
    version: str
    sha256: str
    signature: str
    key_id: str
    size: int
    manifest: dict[str, Any]
    evaluation: dict[str, Any]
    published_at: float


_COLUMNS = "version, sha256, signature, key_id, size, manifest, evaluation, published_at"


def _published(row: Sequence[Any]) -> Published:
    return Published(row[0], row[1], row[2], row[3], int(row[4]), json.loads(row[5]),
                     json.loads(row[6]), float(row[7]))


def publish(db: HubDB, *, version: str, sha256: str, signature: str, key_id: str,
            archive: bytes, manifest: dict[str, Any], evaluation: dict[str, Any]) -> Published:
    """Store a signed archive; a version is published once (RolloutError otherwise)."""
    now = db.clock()
    with db.write() as conn:
        if conn.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone():
            raise RolloutError("version_exists", version)
        conn.execute(
            f"INSERT INTO models({_COLUMNS}, archive) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (version, sha256, signature, key_id, len(archive), json.dumps(manifest),
             json.dumps(evaluation), now, archive),
        )
    return Published(version, sha256, signature, key_id, len(archive), manifest, evaluation, now)


def record_training(db: HubDB, summary: dict[str, Any]) -> None:
    """Every train-model run, published or not, with both figures (the audit trail)."""
    with db.write() as conn:
        conn.execute(
            "INSERT INTO model_trainings(at, version, baseline_version, summary, published) "
            "VALUES (?, ?, ?, ?, ?)",
            (db.clock(), summary["version"], summary.get("baseline_version"),
             json.dumps(summary), int(bool(summary.get("published")))),
        )


def trainings(db: HubDB, limit: int = 20) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute("SELECT summary FROM model_trainings ORDER BY id DESC LIMIT ?",
                            (limit,)).fetchall()
    return [json.loads(r[0]) for r in rows]


def latest(db: HubDB) -> Published | None:
    with db.read() as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM models ORDER BY published_at DESC, "
                           "rowid DESC LIMIT 1").fetchone()
    return _published(row) if row else None


def get(db: HubDB, version: str) -> Published | None:
    with db.read() as conn:
        row = conn.execute(f"SELECT {_COLUMNS} FROM models WHERE version = ?",
                           (version,)).fetchone()
    return _published(row) if row else None


def archive(db: HubDB, version: str) -> bytes | None:
    with db.read() as conn:
        row = conn.execute("SELECT archive FROM models WHERE version = ?", (version,)).fetchone()
    return bytes(row[0]) if row else None


def list_models(db: HubDB) -> list[dict[str, Any]]:
    """Published models, newest first, with their evaluation and how many stores run them."""
    with db.read() as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM models ORDER BY published_at DESC, "
                            "rowid DESC").fetchall()
        assigned = dict(conn.execute(
            "SELECT version, COUNT(*) FROM model_assignments GROUP BY version").fetchall())
    out = []
    for row in rows:
        p = _published(row)
        out.append({"version": p.version, "sha256": p.sha256, "key_id": p.key_id,
                    "size": p.size, "published_at": p.published_at,
                    "evaluation": p.evaluation, "stores_assigned": assigned.get(p.version, 0)})
    return out


def assignment(db: HubDB, store: str) -> dict[str, Any] | None:
    """The contract's ``GET /v1/stores/{store}/model`` body, or None (204)."""
    with db.read() as conn:
        row = conn.execute(
            "SELECT m.version, m.sha256, m.signature, m.key_id FROM model_assignments a "
            "JOIN models m ON m.version = a.version WHERE a.store = ?", (store,)).fetchone()
    if row is None:
        return None
    return {"version": row[0], "sha256": row[1], "signature": row[2], "key_id": row[3],
            "url": BUNDLE_PATH.format(version=row[0])}


def rollout(db: HubDB, version: str, stores: Iterable[str] | None) -> list[str]:
    """Assign ``version`` to ``stores`` (None = every registered store); returns the stores
    whose assignment changed. Each keeps the version it had as its rollback target."""
    now = db.clock()
    with db.write() as conn:
        if not conn.execute("SELECT 1 FROM models WHERE version = ?", (version,)).fetchone():
            raise RolloutError("unknown_version", version)
        known = [r[0] for r in conn.execute("SELECT store_id FROM stores ORDER BY store_id")]
        if stores is None:
            targets, stage = known, "all"
        else:
            targets, stage = sorted(set(stores)), "canary"
            unknown = [s for s in targets if s not in set(known)]
            if unknown or not targets:
                raise RolloutError("unknown_store", ", ".join(unknown) or "no store given")
        changed = []
        for store in targets:
            row = conn.execute("SELECT version FROM model_assignments WHERE store = ?",
                               (store,)).fetchone()
            if row is not None and row[0] == version:
                continue
            conn.execute(
                "INSERT INTO model_assignments(store, version, previous, stage, assigned_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(store) DO UPDATE SET "
                "version = excluded.version, previous = excluded.previous, "
                "stage = excluded.stage, assigned_at = excluded.assigned_at",
                (store, version, row[0] if row else None, stage, now),
            )
            changed.append(store)
    return changed


def rollback(db: HubDB, stores: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Each store (default: all assigned) back to the version it had before; stores with
    nothing to go back to are listed under ``skipped``."""
    now = db.clock()
    wanted = None if stores is None else set(stores)
    done, skipped = [], []
    with db.write() as conn:
        rows = conn.execute("SELECT store, version, previous FROM model_assignments "
                            "ORDER BY store").fetchall()
        present = {r[0] for r in rows}
        if wanted is not None and wanted - present:
            raise RolloutError("not_assigned", ", ".join(sorted(wanted - present)))
        for store, version, previous in rows:
            if wanted is not None and store not in wanted:
                continue
            if previous is None:
                skipped.append(store)
                continue
            conn.execute(
                "UPDATE model_assignments SET version = ?, previous = ?, stage = 'rollback', "
                "assigned_at = ? WHERE store = ?", (previous, version, now, store))
            done.append(store)
    return {"rolled_back": done, "skipped": skipped}


def parse_report(body: Any) -> dict[str, Any]:
    """The edge's report, validated (ValueError with the field at fault)."""
    if not isinstance(body, dict):
        raise ValueError("body must be an object")
    version, outcome = body.get("version"), body.get("outcome")
    if not isinstance(version, str) or not version or len(version) > 64:
        raise ValueError("version must be a model version")
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {list(OUTCOMES)}")
    p50 = body.get("p50_ms")
    if p50 is not None and (isinstance(p50, bool) or not isinstance(p50, int | float)
                            or not math.isfinite(p50) or p50 < 0):
        raise ValueError("p50_ms must be a non-negative number or null")
    out: dict[str, Any] = {"version": version, "outcome": outcome,
                           "p50_ms": None if p50 is None else float(p50)}
    for key, limit in (("reason", 64), ("detail", 300), ("report_id", 64)):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string or null")
        out[key] = value[:limit] if value else None
    return out


def record_report(db: HubDB, store: str, report: dict[str, Any]) -> bool:
    """Store one report; False when this ``report_id`` was already recorded (a retry)."""
    with db.write() as conn:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO model_reports(report_id, store, version, outcome, reason, "
            "detail, p50_ms, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (report["report_id"], store, report["version"], report["outcome"],
             report["reason"], report["detail"], report["p50_ms"], db.clock()),
        )
    return cursor.rowcount == 1


def rollout_status(db: HubDB) -> list[dict[str, Any]]:
    """Per registered store: assignment, the edge's last report, the heartbeat's model.

    ``state``: ``unassigned``; ``pending`` (no report on the assigned version yet);
    else the last report's outcome on the assigned version.
    """
    with db.read() as conn:
        rows = conn.execute(
            "SELECT s.store_id, a.version, a.previous, a.stage, a.assigned_at, "
            "st.model_version FROM stores s "
            "LEFT JOIN model_assignments a ON a.store = s.store_id "
            "LEFT JOIN store_status st ON st.store_id = s.store_id ORDER BY s.store_id"
        ).fetchall()
        reports = conn.execute(
            "SELECT store, version, outcome, reason, detail, p50_ms, received_at "
            "FROM model_reports WHERE id IN (SELECT MAX(id) FROM model_reports GROUP BY store)"
        ).fetchall()
    last = {r[0]: {"version": r[1], "outcome": r[2], "reason": r[3], "detail": r[4],
                   "p50_ms": r[5], "at": r[6]} for r in reports}
    out = []
    for store, version, previous, stage, assigned_at, running in rows:
        report = last.get(store)
        if version is None:
            state = "unassigned"
        elif report is None or report["version"] != version:
            state = "pending"
        else:
            state = report["outcome"]
        out.append({"store": store, "assigned": version, "previous": previous, "stage": stage,
                    "assigned_at": assigned_at, "running": running, "state": state,
                    "last_report": report})
    return out
