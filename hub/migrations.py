"""Numbered schema steps of the hub's SQLite file (runner: ``models.sqlite_schema``).

Number ranges are owned by the parts of the hub so they can add steps independently:
hub core 1..9 (this list's first entries), catalog / offers / segments 10..19, model rollout
20+. Append a ``Migration`` constant and add it to ``MIGRATIONS`` in version order; never
edit a released step.

Privacy: subjects are pseudonymous ids (``m-<hex>``); no table holds a loyalty number (the
subject is derived from it with the chain's HMAC key, see ``models.identity``).
"""

from __future__ import annotations

import sqlite3

from hub.auth_schema import AUTH
from hub.catalog_schema import CATALOG, KPI_INDEX, OFFER_REFRESH_SEQ, PRODUCT_STYLES
from hub.model_schema import MODELS
from hub.retention import RETENTION_INDEXES
from models.sqlite_schema import Migration, SchemaError, apply_migrations, current_version

__all__ = ["MIGRATIONS", "Migration", "SchemaError", "current_version", "migrate"]

_CORE = Migration(
    1,
    "change sequence, stores, store status, signing keys",
    (
        # The global change sequence: every row a feed serves carries the value it got when it
        # last changed (HubDB.next_seq); a feed cursor is the last value a store has seen.
        """CREATE TABLE change_seq (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            value INTEGER NOT NULL
        )""",
        "INSERT INTO change_seq(id, value) VALUES (1, 0)",
        # Only the sha256 of a store key: the key is printed once by `add-store`.
        """CREATE TABLE stores (
            store_id TEXT PRIMARY KEY,
            name TEXT,
            key_sha256 TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE store_status (
            store_id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,          -- last heartbeat = last sync
            model_version TEXT,
            state TEXT,
            outbox_pending INTEGER,
            feeds TEXT NOT NULL DEFAULT '{}',   -- JSON {feed: cursor}
            lag_changes INTEGER,                -- hub sequence - profile feed cursor
            staleness_s REAL,
            active_visits INTEGER
        ) WITHOUT ROWID""",
        # Public halves only; private keys are files in tokens.keys_dir (0600).
        """CREATE TABLE signing_keys (
            kid TEXT PRIMARY KEY,
            public_pem TEXT NOT NULL,
            created_at REAL NOT NULL,
            retire_at REAL                      -- NULL: the active key
        ) WITHOUT ROWID""",
    ),
)

_MEMBERS = Migration(
    2,
    "members, consent history, purchases, aggregates, presence, store relevance",
    (
        """CREATE TABLE members (
            subject TEXT PRIMARY KEY,
            first_name TEXT,
            last_name TEXT,
            email TEXT,
            birthday TEXT,
            tier TEXT,
            home_store TEXT,
            preferences TEXT NOT NULL DEFAULT '{}',
            consent TEXT NOT NULL DEFAULT '{}',   -- current {purpose: bool}; history below
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE consent_events (
            id INTEGER PRIMARY KEY,
            subject TEXT NOT NULL,
            purpose TEXT NOT NULL,
            granted INTEGER NOT NULL,
            channel TEXT NOT NULL,
            at REAL NOT NULL
        )""",
        "CREATE INDEX consent_events_subject ON consent_events(subject, id)",
        """CREATE TABLE aggregates (
            subject TEXT PRIMARY KEY,
            baskets INTEGER NOT NULL,
            total_spend REAL NOT NULL,
            last_purchase_ts REAL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        # subject NULL: an anonymous basket (kept for popularity and training).
        """CREATE TABLE purchases (
            id INTEGER PRIMARY KEY,
            subject TEXT,
            store TEXT NOT NULL,
            event_id TEXT NOT NULL,
            basket_id TEXT NOT NULL,
            ts REAL NOT NULL,
            product_id TEXT NOT NULL,
            quantity REAL NOT NULL,
            unit_price REAL,
            category TEXT
        )""",
        "CREATE INDEX purchases_subject_ts ON purchases(subject, ts)",
        # Where a member was seen: basket / check-in (last_visit_ts) or geofence announce.
        """CREATE TABLE presence (
            subject TEXT NOT NULL,
            store TEXT NOT NULL,
            last_visit_ts REAL,
            announced_at REAL,
            PRIMARY KEY (subject, store)
        ) WITHOUT ROWID""",
        # The profile feed of each store, materialised: one row per (store, member) the store
        # has been sent, with the state it must hold (upsert or delete + reason) and the
        # change sequence of its last change, so a feed page is one index range scan.
        """CREATE TABLE store_members (
            store TEXT NOT NULL,
            subject TEXT NOT NULL,
            relevant_until REAL NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
            reason TEXT,
            seq INTEGER NOT NULL,
            PRIMARY KEY (store, subject)
        ) WITHOUT ROWID""",
        "CREATE INDEX store_members_subject ON store_members(subject)",
        "CREATE UNIQUE INDEX store_members_feed ON store_members(store, seq)",
        "CREATE INDEX store_members_expiry ON store_members(store, relevant_until) "
        "WHERE op = 'upsert'",
    ),
)

_EVENTS = Migration(
    3,
    "store events, erasures and their acknowledgements",
    (
        # A rowid table (event_id is its unique key): edge event ids are random, and payloads
        # appended in rowid order keep a batch's commit small; only the key index is random.
        """CREATE TABLE events (
            event_id TEXT PRIMARY KEY,
            store TEXT NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL,
            received_at REAL NOT NULL
        )""",
        "CREATE INDEX events_subject ON events(subject) WHERE subject IS NOT NULL",
        # The minimal record kept after an erasure: the pseudonymous subject only, so late
        # events of that member can be refused and every store can be told (docs/hub.md).
        """CREATE TABLE erasures (
            erasure_id TEXT PRIMARY KEY,
            subject TEXT NOT NULL UNIQUE,
            requested_at REAL NOT NULL,
            seq INTEGER NOT NULL UNIQUE
        ) WITHOUT ROWID""",
        """CREATE TABLE erasure_acks (
            erasure_id TEXT NOT NULL,
            store TEXT NOT NULL,
            acked_at REAL NOT NULL,
            PRIMARY KEY (erasure_id, store)
        ) WITHOUT ROWID""",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (
    _CORE, _MEMBERS, _EVENTS, CATALOG, KPI_INDEX, OFFER_REFRESH_SEQ, PRODUCT_STYLES,
    MODELS, AUTH, RETENTION_INDEXES,
)


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Bring the hub schema up to ``target`` (default: latest); returns the version reached."""
    return apply_migrations(conn, MIGRATIONS, target)
