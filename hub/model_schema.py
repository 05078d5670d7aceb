"""Hub migration 20: published model bundles, training runs, per-store assignments, reports.

Kept beside the other hub steps' tables (``hub.migrations`` lists it); the logic on these
tables is ``hub.model_registry``.
"""

from __future__ import annotations

from models.sqlite_schema import Migration

MODELS = Migration(
    20,
    "model bundles, trainings, per-store assignments, edge reports",
    (
        # rowid table: the archive is a BLOB of tens of kB (kept out of the index b-tree)
        """CREATE TABLE models (
            version TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL,               -- of the archive, as signed
            signature TEXT NOT NULL,            -- Ed25519, base64url (models.signing)
            key_id TEXT NOT NULL,               -- model-signing key, not a token key
            size INTEGER NOT NULL,
            manifest TEXT NOT NULL,             -- JSON, with the golden record
            evaluation TEXT NOT NULL,           -- JSON: candidate and baseline figures
            published_at REAL NOT NULL,
            archive BLOB NOT NULL
        )""",
        # every train-model / publish-model run, published or not (both figures)
        """CREATE TABLE model_trainings (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            version TEXT NOT NULL,
            baseline_version TEXT,
            summary TEXT NOT NULL,
            published INTEGER NOT NULL
        )""",
        """CREATE TABLE model_assignments (
            store TEXT PRIMARY KEY REFERENCES stores(store_id),
            version TEXT NOT NULL REFERENCES models(version),
            previous TEXT REFERENCES models(version),   -- what rollback goes back to
            stage TEXT NOT NULL CHECK (stage IN ('canary', 'all', 'rollback')),
            assigned_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE model_reports (
            id INTEGER PRIMARY KEY,
            report_id TEXT UNIQUE,              -- the edge's id: a retried report counts once
            store TEXT NOT NULL,
            version TEXT NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('active', 'rolled_back', 'refused')),
            reason TEXT,
            detail TEXT,
            p50_ms REAL,
            received_at REAL NOT NULL
        )""",
        "CREATE INDEX model_reports_store ON model_reports(store, id)",
    ),
)
