"""Admin and till tokens of the edge API, their registry in SQLite, the check per request.

The store's operations (a Prometheus scraper, a support engineer's script, device
management over HTTP) use an ``admin`` token; a till that posts baskets over HTTP uses a
``till`` token (``POST /v1/pos`` only). ``storeside-edge admin-token create`` prints a token
once; the edge keeps its sha256 only (table ``api_keys``, migration 9), so the SQLite file
alone lets nobody in. Several tokens are valid at once, which is how one is replaced without
downtime: create the new one, switch the caller, watch ``list`` until the old one is no
longer used, revoke it (effective within ``ApiKeyRegistry`` ttl, 0.5 s, no restart). A token
may also expire by itself (``--expires-in 30d``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from edge.devices import _connect
from edge.token_cache import TokenLookup, hash_token
from models.api_keys import ApiKey, new_api_key, revoke_matching
from models.sqlite_schema import immediate_transaction

logger = logging.getLogger(__name__)

ROLES = ("admin", "till")
TOKEN_PREFIX = "ssk_"  # recognisable in a leaked log line or a secret scanner
_COLUMNS = "key_id, role, label, created_at, expires_at, revoked_at, last_used_at"


def create_api_key(
    db_path: Path, label: str, role: str = "admin", *, expires_in_s: float | None = None,
    now: float | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its raw token (the only time it exists in clear). Migrates the file
    first if needed, so a token can be made before the edge first runs."""
    stamp = time.time() if now is None else now
    key, token = new_api_key(role, label, roles=ROLES, now=stamp, expires_in_s=expires_in_s,
                             token_prefix=TOKEN_PREFIX, id_prefix="key-")
    with _connect(Path(db_path)) as conn, immediate_transaction(conn):
        conn.execute(
            "INSERT INTO api_keys(key_id, key_sha256, role, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key.key_id, hash_token(token), key.role, key.label, stamp, key.expires_at),
        )
    logger.info("created %s token %s (%s)", role, key.key_id, label)
    return key, token


def list_api_keys(db_path: Path) -> list[ApiKey]:
    """Every key, revoked and expired ones included, oldest first."""
    with _connect(Path(db_path)) as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at").fetchall()
    return [ApiKey(*row) for row in rows]


def revoke_api_key(db_path: Path, key: str, *, now: float | None = None) -> list[ApiKey]:
    """Revoke the unrevoked key(s) whose id is ``key``, or else whose label is."""
    stamp = time.time() if now is None else now
    with _connect(Path(db_path)) as conn, immediate_transaction(conn):
        revoked = revoke_matching(conn, key, stamp, _COLUMNS)
    for k in revoked:
        logger.info("revoked %s token %s (%s)", k.role, k.key_id, k.label)
    return revoked


class ApiKeyRegistry:
    """The edge process's view of API keys: ``authenticate`` per request (cached)."""

    def __init__(self, db_path: Path, *, ttl_s: float = 0.5, touch_every_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db_path = Path(db_path)
        self._lookup: TokenLookup[ApiKey] = TokenLookup(
            self.db_path,
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_sha256 = :hash AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > :now)",
            lambda row: ApiKey(*row), ident=lambda k: k.key_id,
            last_used=lambda k: k.last_used_at,
            touch_sql="UPDATE api_keys SET last_used_at = ? WHERE key_id = ?",
            ttl_s=ttl_s, touch_every_s=touch_every_s, clock=clock,
        )

    def authenticate(self, token: str | None) -> ApiKey | None:
        """The active, unexpired key of ``token``, or None."""
        return self._lookup.get(token)

    def revoke(self, key: str) -> list[ApiKey]:
        """Revoke through this registry: effective at once in this process."""
        revoked = revoke_api_key(self.db_path, key)
        self._lookup.forget({k.key_id for k in revoked})
        return revoked

    def close(self) -> None:
        self._lookup.close()
