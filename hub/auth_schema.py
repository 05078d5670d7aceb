"""Hub migration 30 (issue 6): API keys with roles, and several keys per store.

``api_keys``: keys made by ``storeside-hub api-key create`` (sha256 only), one role each
(``hub.roles``), optionally expiring, revocable. ``store_keys``: every valid key of a store;
``rotate-store-key`` adds one and gives the previous ones an ``expires_at`` (the overlap in
which the store switches over). Existing store keys move over unchanged; ``stores.key_sha256``
stays and holds the newest key's hash (for readers of that column; the hub authenticates
with ``store_keys`` only).
"""

from __future__ import annotations

from models.sqlite_schema import Migration

AUTH = Migration(
    30,
    "API keys with roles; several (rotating) keys per store",
    (
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,            -- hk-<hex>, shown in lists and logs
            key_sha256 TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL
                CHECK (role IN ('admin', 'catalog', 'models', 'privacy', 'viewer', 'app')),
            label TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,                    -- NULL: until revoked
            revoked_at REAL
        ) WITHOUT ROWID""",
        """CREATE TABLE store_keys (
            key_sha256 TEXT PRIMARY KEY,
            store_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL                     -- NULL: the current key
        ) WITHOUT ROWID""",
        "CREATE INDEX store_keys_store ON store_keys(store_id)",
        "INSERT INTO store_keys(key_sha256, store_id, created_at)"
        " SELECT key_sha256, store_id, created_at FROM stores",
    ),
)
