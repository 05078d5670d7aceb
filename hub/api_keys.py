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
import secrets
from dataclasses import dataclass

from hub.roles import ROLES
from hub.storage import HubDB
from hub.stores import token_sha256

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "shk_"
LABEL_MAX = 64
_COLUMNS = "key_id, role, label, created_at, expires_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    role: str
    label: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_dict(self, now: float) -> dict[str, object]:
        return {"key_id": self.key_id, "role": self.role, "label": self.label,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at, "state": self.state(now)}


def create_api_key(db: HubDB, role: str, label: str, *,
                   expires_in_s: float | None = None) -> tuple[ApiKey, str]:
    """A new key of ``role`` and its raw token (the only time it exists in clear)."""
    label = label.strip()
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not label or len(label) > LABEL_MAX or not label.isprintable():
        raise ValueError(f"label must be 1..{LABEL_MAX} printable characters")
    if expires_in_s is not None and not expires_in_s > 0:
        raise ValueError("expires_in must be > 0")
    now = db.clock()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey("hk-" + secrets.token_hex(4), role, label, now,
                 None if expires_in_s is None else now + expires_in_s, None)
    with db.write() as conn:
        conn.execute(
            "INSERT INTO api_keys(key_id, key_sha256, role, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key.key_id, token_sha256(token), role, label, now, key.expires_at),
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
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ? AND revoked_at IS NULL", (key,)
        ).fetchall() or conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE label = ? AND revoked_at IS NULL", (key,)
        ).fetchall()
        conn.executemany("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?",
                         [(now, row[0]) for row in rows])
    revoked = [ApiKey(*row[:5], now) for row in rows]
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
