"""Numbered schema steps of the edge's SQLite file, applied at start-up.

A store device is updated in place and keeps its SQLite file across software versions, so the
schema is never "created" but migrated: every step has a number, runs in its own
``BEGIN IMMEDIATE`` transaction together with the ``schema_version`` row that records it, and
the version is re-read inside that transaction, so two processes starting at once (or a crash
half-way) can neither skip nor repeat a step. Steps are append-only: never edit a released one.

Subjects are pseudonymous ids (``m-<hex>``); no table holds a loyalty number.
"""

from __future__ import annotations

import sqlite3

# The runner is shared with the hub (models.sqlite_schema); re-exported for edge callers.
from edge.retention import RETENTION_INDEXES
from models.sqlite_schema import Migration, SchemaError, apply_migrations, current_version

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "SchemaError", "current_version",
           "migrate"]


_CORE = Migration(
    1,
    "profiles, purchases, aggregates, catalog, offers",
    (
        """CREATE TABLE profiles (
            subject TEXT PRIMARY KEY,
            first_name TEXT,
            tier TEXT,
            birthday TEXT,                      -- YYYY-MM-DD
            preferences TEXT NOT NULL DEFAULT '{}',   -- JSON: sizes, brands, notes
            consent TEXT NOT NULL DEFAULT '{}',       -- JSON {purpose: bool}
            home_store TEXT,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        # subject NULL = anonymous basket (still counts for store popularity).
        """CREATE TABLE purchases (
            id INTEGER PRIMARY KEY,
            subject TEXT,
            basket_id TEXT NOT NULL,
            ts REAL NOT NULL,
            product_id TEXT NOT NULL,
            quantity REAL NOT NULL,
            unit_price REAL,
            category TEXT
        )""",
        "CREATE INDEX purchases_subject_ts ON purchases(subject, ts)",
        "CREATE INDEX purchases_ts ON purchases(ts)",
        """CREATE TABLE aggregates (
            subject TEXT PRIMARY KEY,
            baskets INTEGER NOT NULL,
            total_spend REAL NOT NULL,
            last_purchase_ts REAL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE catalog (
            product_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            category TEXT,
            price REAL NOT NULL,
            stock INTEGER NOT NULL,
            zone TEXT,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE offers (
            offer_id TEXT PRIMARY KEY,
            product_id TEXT,
            category TEXT,
            discount_pct REAL NOT NULL,
            valid_from REAL NOT NULL,
            valid_to REAL NOT NULL
        ) WITHOUT ROWID""",
        # Small key/value table; catalog_version is the ranking cache key.
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta(key, value) VALUES ('catalog_version', 0)",
        # Triggers, not application code, bump the version, so no writer (bulk load, upsert,
        # POS stock decrement, a manual fix) can change the catalog without invalidating.
        """CREATE TRIGGER catalog_ins AFTER INSERT ON catalog BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END""",
        """CREATE TRIGGER catalog_del AFTER DELETE ON catalog BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END""",
        """CREATE TRIGGER catalog_upd AFTER UPDATE ON catalog
            WHEN OLD.name IS NOT NEW.name OR OLD.category IS NOT NEW.category
              OR OLD.price IS NOT NEW.price OR OLD.stock IS NOT NEW.stock
              OR OLD.zone IS NOT NEW.zone OR OLD.product_id IS NOT NEW.product_id
            BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END""",
    ),
)

_EVENTS = Migration(
    2,
    "visits, impressions, feedback, processed events, tokens, outbox",
    (
        """CREATE TABLE visits (
            visit_id TEXT PRIMARY KEY,
            subject TEXT,
            started_at REAL NOT NULL,
            ended_at REAL,
            zone TEXT,
            confidence REAL NOT NULL,
            checked_in INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX visits_subject ON visits(subject)",
        """CREATE TABLE impressions (
            id INTEGER PRIMARY KEY,
            event_id TEXT NOT NULL,
            visit_id TEXT NOT NULL,
            subject TEXT,
            product_id TEXT NOT NULL,
            channel TEXT NOT NULL CHECK (channel IN ('staff', 'app')),
            rank INTEGER NOT NULL,
            score REAL NOT NULL,
            relevance REAL NOT NULL,
            reasons TEXT NOT NULL DEFAULT '[]',
            ts REAL NOT NULL
        )""",
        "CREATE INDEX impressions_subject_ts ON impressions(subject, ts)",
        "CREATE INDEX impressions_visit ON impressions(visit_id)",
        """CREATE TABLE feedback (
            event_id TEXT PRIMARY KEY,
            subject TEXT NOT NULL,
            visit_id TEXT,
            product_id TEXT NOT NULL,
            action TEXT NOT NULL,
            channel TEXT NOT NULL CHECK (channel IN ('staff', 'app')),
            ts REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX feedback_subject_ts ON feedback(subject, ts)",
        "CREATE INDEX feedback_visit ON feedback(visit_id)",
        """CREATE TABLE processed_events (
            event_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            ts REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX processed_events_ts ON processed_events(ts)",
        """CREATE TABLE seen_tokens (
            token_id TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX seen_tokens_expires ON seen_tokens(expires_at)",
        # subject is kept beside the payload so an erasure can drop queued events of a member.
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            subject TEXT,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX outbox_subject ON outbox(subject)",
    ),
)

# Paired staff tablets (issue 3). Only the sha256 of a device token is kept: the token is
# shown once when pairing, and a stolen copy of the file does not let anyone in. A revoked
# device keeps its row (who had access, until when) with ``revoked_at`` set.
_DEVICES = Migration(
    3,
    "paired staff tablets",
    (
        """CREATE TABLE devices (
            device_id TEXT PRIMARY KEY,
            label TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,    -- sha256 hex of the device token
            created_at REAL NOT NULL,
            last_seen_at REAL,
            revoked_at REAL
        ) WITHOUT ROWID""",
    ),
)

# Hub sync state (issue 5). A feed's cursor is written in the transaction that applies its
# page, so a crash can neither skip nor (harmfully) repeat items. An erasure is recorded when
# applied and kept until the hub confirmed the ack: applied once, acked until confirmed. It
# keeps no subject: the receipt must not itself be a trace of the erased member.
_SYNC = Migration(
    4,
    "hub sync: feed cursors, erasure receipts, check-in keys",
    (
        """CREATE TABLE sync_feeds (
            feed TEXT PRIMARY KEY,
            cursor TEXT NOT NULL DEFAULT '0',
            last_success_at REAL,               -- last time the feed was read to its end
            items_applied INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID""",
        """CREATE TABLE erasure_receipts (
            erasure_id TEXT PRIMARY KEY,
            applied_at REAL NOT NULL,
            acked_at REAL                       -- NULL until the hub confirmed the ack
        ) WITHOUT ROWID""",
        "CREATE INDEX erasure_receipts_unacked ON erasure_receipts(applied_at) "
        "WHERE acked_at IS NULL",
        # The hub's check-in public keys (JWKS entries), kept so an edge restarted while the
        # hub is down still accepts the tokens of the current keys.
        """CREATE TABLE sync_keys (
            kid TEXT PRIMARY KEY,
            jwk TEXT NOT NULL,                  -- JSON of the JWKS entry (public key only)
            fetched_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
)

# Segment-targeted offers (the offers feed's ``segment`` + ``subjects``): an offer with a row
# in ``offer_segments`` applies only to its ``offer_subjects`` (none: to nobody); without one,
# to everyone. Subjects sit in a table of their own with a ``subject`` column so an erasure
# deletes them like every other row about a member. ``offers_version`` is the ranking's
# offers cache key, bumped by triggers like ``catalog_version``: no writer can forget it.
_OFFER_TARGETS = Migration(
    5,
    "segment offers: eligible subjects, offers_version",
    (
        """CREATE TABLE offer_segments (
            offer_id TEXT PRIMARY KEY,
            segment TEXT
        ) WITHOUT ROWID""",
        """CREATE TABLE offer_subjects (
            offer_id TEXT NOT NULL,
            subject TEXT NOT NULL,
            PRIMARY KEY (offer_id, subject)
        ) WITHOUT ROWID""",
        "CREATE INDEX offer_subjects_subject ON offer_subjects(subject)",
        "INSERT INTO meta(key, value) VALUES ('offers_version', 0)",
        """CREATE TRIGGER offers_ins AFTER INSERT ON offers BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'offers_version'; END""",
        # Only a real change counts: a feed or seed resending an offer as it is keeps caches.
        """CREATE TRIGGER offers_upd AFTER UPDATE ON offers
            WHEN OLD.product_id IS NOT NEW.product_id OR OLD.category IS NOT NEW.category
              OR OLD.discount_pct IS NOT NEW.discount_pct
              OR OLD.valid_from IS NOT NEW.valid_from OR OLD.valid_to IS NOT NEW.valid_to
              OR OLD.offer_id IS NOT NEW.offer_id
            BEGIN UPDATE meta SET value = value + 1 WHERE key = 'offers_version'; END""",
        # A deleted offer takes its targeting along, whoever deletes it.
        """CREATE TRIGGER offers_del AFTER DELETE ON offers BEGIN
            DELETE FROM offer_segments WHERE offer_id = OLD.offer_id;
            DELETE FROM offer_subjects WHERE offer_id = OLD.offer_id;
            UPDATE meta SET value = value + 1 WHERE key = 'offers_version'; END""",
        """CREATE TRIGGER offer_segments_ins AFTER INSERT ON offer_segments BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'offers_version'; END""",
        """CREATE TRIGGER offer_segments_del AFTER DELETE ON offer_segments BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'offers_version'; END""",
        """CREATE TRIGGER offer_subjects_ins AFTER INSERT ON offer_subjects BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'offers_version'; END""",
        """CREATE TRIGGER offer_subjects_del AFTER DELETE ON offer_subjects BEGIN
            UPDATE meta SET value = value + 1 WHERE key = 'offers_version'; END""",
    ),
)

# Styles (products sold in variants: colours, sizes). ``style_id`` NULL: the product is a
# style of its own. The rules show one variant per style and a dismiss hides the whole style
# for the visit (edge.store_reader.cap_counts looks up the siblings: hence the index). The
# update trigger is re-created with ``style_id`` among the compared columns, so a style
# change invalidates the ranking cache like any other catalog change, exactly once.
_STYLES = Migration(
    6,
    "catalog styles: style_id, its index, catalog_version on a style change",
    (
        "ALTER TABLE catalog ADD COLUMN style_id TEXT",
        "CREATE INDEX catalog_style ON catalog(style_id) WHERE style_id IS NOT NULL",
        "DROP TRIGGER catalog_upd",
        """CREATE TRIGGER catalog_upd AFTER UPDATE ON catalog
            WHEN OLD.name IS NOT NEW.name OR OLD.category IS NOT NEW.category
              OR OLD.price IS NOT NEW.price OR OLD.stock IS NOT NEW.stock
              OR OLD.zone IS NOT NEW.zone OR OLD.product_id IS NOT NEW.product_id
              OR OLD.style_id IS NOT NEW.style_id
            BEGIN UPDATE meta SET value = value + 1 WHERE key = 'catalog_version'; END""",
    ),
)

# Restart (edge.visit_restore): an open visit's tracker state is checkpointed into its row so
# a restarted edge carries on with the same visit (same visit_id: caps and dismissals hold).
# ``resume`` is the JSON of edge.visit.VisitState; ``end_reason`` says why a restart closed
# a row (``restart_timeout``, ...), NULL for visits that ended live. The partial index keeps
# the start-up read of open rows small however long the history grows.
_VISIT_RESUME = Migration(
    7,
    "visits: last seen, resumable tracker state, end reason",
    (
        "ALTER TABLE visits ADD COLUMN last_seen_at REAL",
        "ALTER TABLE visits ADD COLUMN resume TEXT",
        "ALTER TABLE visits ADD COLUMN end_reason TEXT",
        "CREATE INDEX visits_open ON visits(started_at) WHERE ended_at IS NULL",
    ),
)

# One-time tablet pairing codes (``storeside-edge pair-tablet``): what a person sees is a
# short code valid for minutes and usable once; the device token the tablet then keeps is
# made at redemption and never shown. Only the code's sha256 is kept; ``used_at`` and
# ``device_id`` record which device a code became (redeeming sets both in one transaction).
_PAIRING_CODES = Migration(
    8,
    "one-time tablet pairing codes",
    (
        """CREATE TABLE pairing_codes (
            code_hash TEXT PRIMARY KEY,         -- sha256 hex of the canonical code
            label TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL,
            device_id TEXT                      -- the device it paired, once used
        ) WITHOUT ROWID""",
        "CREATE INDEX pairing_codes_expires ON pairing_codes(expires_at)",
    ),
)

# API auth (issue 6): admin / till tokens of the edge API (``storeside-edge admin-token``),
# sha256 only, several valid at once so one can be replaced without downtime; and device token
# rotation: the previous hash of a tablet's token stays valid until ``prev_valid_until`` (a
# short grace for requests in flight and other tabs), then only the new one works.
_API_AUTH = Migration(
    9,
    "edge API keys (admin, till); tablet token rotation",
    (
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,            -- key-<hex>, shown in lists and logs
            key_sha256 TEXT NOT NULL UNIQUE,    -- sha256 hex of the token
            role TEXT NOT NULL CHECK (role IN ('admin', 'till')),
            label TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,                    -- NULL: until revoked
            revoked_at REAL,
            last_used_at REAL
        ) WITHOUT ROWID""",
        "ALTER TABLE devices ADD COLUMN prev_token_hash TEXT",
        "ALTER TABLE devices ADD COLUMN prev_valid_until REAL",
        "ALTER TABLE devices ADD COLUMN rotated_at REAL",
        "CREATE INDEX devices_prev_token ON devices(prev_token_hash)"
        " WHERE prev_token_hash IS NOT NULL",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (
    _CORE, _EVENTS, _DEVICES, _SYNC, _OFFER_TARGETS, _STYLES, _VISIT_RESUME,
    _PAIRING_CODES, _API_AUTH, RETENTION_INDEXES,
)
LATEST_VERSION = MIGRATIONS[-1].version


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Bring the edge schema up to ``target`` (default: latest); returns the version reached."""
    return apply_migrations(conn, MIGRATIONS, target)
