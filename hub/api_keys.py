"""Hub API keys with a role (``hub.roles``): made, listed and revoked by
``storeside-hub api-key``; checked per request by ``hub.auth``.

A key is shown once and kept as sha256 only (``api_keys``, migration 30), like store keys:
a copy of the hub database lets nobody in. Several keys of a role can be valid at once, so
one is replaced without downtime (create, switch the caller, revoke the old); a key may also
expire by itself. The settings' ``admin_tokens`` / ``app_tokens`` stay as bootstrap keys
(the first admin creates the others).
"""

from __future__ import annotations

import logging

from hub.roles import ROLES
from hub.storage import HubDB
from hub.stores import token_sha256
from models.api_keys import ApiKey, new_api_key, revoke_matching

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "shk_"
_COLUMNS = "key_id, role, label, created_at, expires_at, revoked_at"


def create_api_key(db: HubDB, role: str, label: str, *,
                   expires_in_s: float | None = None) -> tuple[ApiKey, str]:
    """A new key of ``role`` and its raw token (the only time it exists in clear)."""
    now = db.clock()
    key, token = new_api_key(role, label, roles=ROLES, now=now, expires_in_s=expires_in_s,
                             token_prefix=TOKEN_PREFIX, id_prefix="hk-")
    with db.write() as conn:
        conn.execute(
            "INSERT INTO api_keys(key_id, key_sha256, role, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key.key_id, token_sha256(token), key.role, key.label, now, key.expires_at),
        )
    logger.info("created hub API key %s (%s, %s)", key.key_id, role, label)
    return key, token


def list_api_keys(db: HubDB) -> list[ApiKey]:
    with db.read() as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at").fetchall()
    return [ApiKey(*row) for row in rows]


def revoke_api_key(db: HubDB, key: str) -> list[ApiKey]:
    """Revoke the unrevoked key(s) whose id is ``key``, or else whose label is; at once."""
    now = db.clock()
    with db.write() as conn:
        revoked = revoke_matching(conn, key, now, _COLUMNS)
    for k in revoked:
        logger.info("revoked hub API key %s (%s, %s)", k.key_id, k.role, k.label)
    return revoked


def key_for_digest(db: HubDB, digest: str) -> ApiKey | None:
    """The active, unexpired key with this sha256, or None."""
    with db.read() as conn:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_sha256 = ? AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?)", (digest, db.clock()),
        ).fetchone()
    return None if row is None else ApiKey(*row)
