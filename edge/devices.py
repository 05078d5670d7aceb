"""Paired staff tablets: pairing codes, device tokens, their registry in SQLite, and the
check per request.

A tablet is paired once: ``storeside-edge pair-tablet`` makes a one-time pairing code
(``create_pairing_code``: short, typeable, valid for minutes, table ``pairing_codes``,
migration 8). Redeeming it (``redeem_pairing_code``, from the tablet's browser or a
script) creates the device with a NEW random token in the same transaction that marks the
code used, so a code pairs at most one device however many redeem it at once. The token
then lives only in the tablet's HttpOnly cookie (or a script's ``Authorization: Bearer``
header): no person sees it, no link, screenshot or chat message carries it. The edge keeps
sha256 hashes of tokens and codes only (table ``devices``, migration 3), so the SQLite file
alone lets nobody in. Revoking sets ``revoked_at``; the row stays as a record.

Checking a token runs on every tablet request, so ``DeviceRegistry`` caches hash → device
in memory for ``ttl_s`` (0.5 s, ``edge.token_cache``): a revocation by another process (the
CLI) is effective within that time, one by this process at once. ``last_seen_at`` is
written at most once per ``touch_every_s`` per device.

A tablet replaces its own token with ``rotate_device_token`` (``POST /v1/devices/rotate``):
the previous hash stays valid for a short grace (migration 9), so a request in flight or a
second tab does not fail, and a token that leaked stops working without re-pairing.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.pairing_codes import new_code, normalize_code
from edge.store import EdgeStore
from edge.token_cache import BUSY_TIMEOUT_S, TokenLookup, hash_token
from models.api_keys import check_label
from models.sqlite_schema import immediate_transaction

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "sst_"  # recognisable in a leaked log line or a secret scanner
_COLUMNS = "device_id, label, created_at, last_seen_at, revoked_at"
PAIRING_RECORD_S = 30 * 86_400  # used/expired codes kept this long (who paired what, when)


@dataclass(frozen=True, slots=True)
class PendingCode:
    """A pairing code not used yet and not expired (the code itself is not known here)."""

    label: str
    created_at: float
    expires_at: float


class PairingRefused(Exception):
    """A pairing code that pairs nothing; ``reason``: malformed_code, unknown_code,
    code_used, code_expired (the API's reason codes)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    label: str
    created_at: float
    last_seen_at: float | None
    revoked_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_token() -> str:
    """256 random bits, URL-safe (it travels in a pairing URL and a cookie)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@contextmanager
def _connect(db_path: Path, *, migrate: bool = True) -> Iterator[sqlite3.Connection]:
    """A short-lived connection to a migrated file (EdgeStore creates and migrates it;
    ``migrate=False`` inside a running edge, whose runtime did that at start)."""
    if migrate:
        db_path.parent.mkdir(parents=True, exist_ok=True)  # as the edge does at start
        EdgeStore(db_path).close()
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        yield conn
    finally:
        conn.close()


def pair_device(db_path: Path, label: str, *, now: float | None = None) -> str:
    """Register a new device directly; returns its raw token (the only time it exists in
    clear). For tests and tools that keep the token in a program: people pair tablets with
    a one-time code (``create_pairing_code``), so no token is ever shown to them.

    Migrates the database first if needed.
    """
    label = check_label(label)
    with _connect(Path(db_path)) as conn, immediate_transaction(conn):
        device, token = _insert_device(conn, label, time.time() if now is None else now)
    logger.info("paired tablet %s (%s)", device.device_id, label)
    return token


def _insert_device(conn: sqlite3.Connection, label: str, now: float) -> tuple[Device, str]:
    token = new_token()
    device = Device("tab-" + secrets.token_hex(4), label, now, None, None)
    conn.execute(
        "INSERT INTO devices(device_id, label, token_hash, created_at) VALUES (?, ?, ?, ?)",
        (device.device_id, label, hash_token(token), now),
    )
    return device, token


def create_pairing_code(
    db_path: Path, label: str, ttl_s: float, *, now: float | None = None
) -> str:
    """A one-time code that pairs a tablet labelled ``label`` within ``ttl_s`` seconds;
    returned in canonical form (``format_code`` shows it grouped). Only its hash is kept.

    Migrates the database first if needed, so the demo can make one before the edge runs."""
    label = check_label(label)
    if not ttl_s > 0:
        raise ValueError("ttl_s must be > 0")
    stamp = time.time() if now is None else now
    with _connect(Path(db_path)) as conn, immediate_transaction(conn):
        conn.execute("DELETE FROM pairing_codes WHERE expires_at < ?",
                     (stamp - PAIRING_RECORD_S,))
        while True:  # a clash with a kept code is ~1e-12 likely; never reuse one anyway
            code = new_code()
            try:
                conn.execute(
                    "INSERT INTO pairing_codes(code_hash, label, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?)", (hash_token(code), label, stamp, stamp + ttl_s),
                )
            except sqlite3.IntegrityError:
                continue
            break
    logger.info("pairing code created for %s, valid %.0f s", label, ttl_s)
    return code


def redeem_pairing_code(
    db_path: Path,
    code: str,
    label: str | None = None,
    *,
    now: float | None = None,
    migrate: bool = True,
) -> tuple[Device, str]:
    """Use ``code`` once: the new device and its raw token (handed to the tablet, never
    shown). Raises ``PairingRefused``; ``ValueError`` for a bad ``label`` (default: the
    label given when the code was made).

    One ``BEGIN IMMEDIATE`` transaction reads the code, creates the device and marks the
    code used: of two redeems of one code, the second sees it used."""
    canonical = normalize_code(code)
    if canonical is None:
        raise PairingRefused("malformed_code")
    label = None if label is None else check_label(label)
    stamp = time.time() if now is None else now
    with _connect(Path(db_path), migrate=migrate) as conn, immediate_transaction(conn):
        row = conn.execute(
            "SELECT label, expires_at, used_at FROM pairing_codes WHERE code_hash = ?",
            (hash_token(canonical),),
        ).fetchone()
        if row is None:
            raise PairingRefused("unknown_code")
        if row[2] is not None:
            raise PairingRefused("code_used")
        if row[1] <= stamp:
            raise PairingRefused("code_expired")
        device, token = _insert_device(conn, label or row[0], stamp)
        conn.execute(
            "UPDATE pairing_codes SET used_at = ?, device_id = ? WHERE code_hash = ?",
            (stamp, device.device_id, hash_token(canonical)),
        )
    logger.info("paired tablet %s (%s) with a pairing code", device.device_id, device.label)
    return device, token


def pending_pairing_codes(db_path: Path, *, now: float | None = None) -> list[PendingCode]:
    """Codes that can still pair a tablet, oldest first (for ``list-tablets``)."""
    stamp = time.time() if now is None else now
    with _connect(Path(db_path)) as conn:
        rows = conn.execute(
            "SELECT label, created_at, expires_at FROM pairing_codes"
            " WHERE used_at IS NULL AND expires_at > ? ORDER BY created_at", (stamp,),
        ).fetchall()
    return [PendingCode(*row) for row in rows]


def list_devices(db_path: Path) -> list[Device]:
    """Every paired tablet, revoked ones included, oldest first."""
    with _connect(Path(db_path)) as conn:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM devices ORDER BY created_at").fetchall()
    return [Device(*row) for row in rows]


def revoke_device(db_path: Path, device: str, *, now: float | None = None) -> list[Device]:
    """Revoke the active tablet(s) whose id is ``device``, or else whose label is; returns
    them (empty when nothing matched). Tablets stop working within ``DeviceRegistry.ttl_s``."""
    stamp = time.time() if now is None else now
    with _connect(Path(db_path)) as conn, immediate_transaction(conn):
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM devices WHERE device_id = ? AND revoked_at IS NULL",
            (device,),
        ).fetchall() or conn.execute(
            f"SELECT {_COLUMNS} FROM devices WHERE label = ? AND revoked_at IS NULL", (device,)
        ).fetchall()
        conn.executemany(
            "UPDATE devices SET revoked_at = ? WHERE device_id = ?",
            [(stamp, row[0]) for row in rows],
        )
    revoked = [Device(row[0], row[1], row[2], row[3], stamp) for row in rows]
    for d in revoked:
        logger.info("revoked tablet %s (%s)", d.device_id, d.label)
    return revoked


class NotCurrentToken(Exception):
    """Rotation asked with a token that is not the device's current one (a superseded
    token in its grace period may still read, never mint a successor)."""


def rotate_device_token(
    db_path: Path, token: str, grace_s: float, *, now: float | None = None, migrate: bool = True
) -> tuple[Device, str]:
    """Replace the token of the device holding ``token`` by a new one; the old one keeps
    working for ``grace_s`` (requests in flight, other tabs), then only the new one does.
    One transaction: of two rotations with one token, the second finds it superseded."""
    stamp = time.time() if now is None else now
    new = new_token()
    with _connect(Path(db_path), migrate=migrate) as conn, immediate_transaction(conn):
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM devices WHERE token_hash = ? AND revoked_at IS NULL",
            (hash_token(token),),
        ).fetchone()
        if row is None:
            raise NotCurrentToken()
        conn.execute(
            "UPDATE devices SET prev_token_hash = token_hash, prev_valid_until = ?,"
            " token_hash = ?, rotated_at = ? WHERE device_id = ?",
            (stamp + grace_s, hash_token(new), stamp, row[0]),
        )
    device = Device(*row)
    logger.info("rotated the token of tablet %s", device.device_id)
    return device, new


# The current token, or the previous one during its grace after a rotation.
_AUTH_QUERY = (
    f"SELECT {_COLUMNS} FROM devices WHERE token_hash = :hash AND revoked_at IS NULL"
    f" UNION ALL SELECT {_COLUMNS} FROM devices WHERE prev_token_hash = :hash"
    " AND prev_valid_until > :now AND revoked_at IS NULL LIMIT 1"
)


class DeviceRegistry:
    """The edge process's view of paired tablets: ``authenticate`` per request (cached,
    see ``edge.token_cache``)."""

    def __init__(
        self,
        db_path: Path,
        *,
        ttl_s: float = 0.5,
        touch_every_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = Path(db_path)
        self._clock = clock
        self._lookup: TokenLookup[Device] = TokenLookup(
            self.db_path, _AUTH_QUERY, lambda row: Device(*row),
            ident=lambda d: d.device_id, last_used=lambda d: d.last_seen_at,
            touch_sql="UPDATE devices SET last_seen_at = ? WHERE device_id = ?",
            ttl_s=ttl_s, touch_every_s=touch_every_s, clock=clock,
        )

    def authenticate(self, token: str | None) -> Device | None:
        """The active device holding ``token``, or None (unknown, revoked, superseded)."""
        return self._lookup.get(token)

    def redeem(self, code: str, label: str | None = None) -> tuple[Device, str]:
        """Pair a device with a one-time code, by this edge's clock (see
        ``redeem_pairing_code``). Its own connection: it writes, and must not hold up
        other tablets' checks behind the lock."""
        return redeem_pairing_code(self.db_path, code, label, now=self._clock(), migrate=False)

    def rotate(self, token: str, grace_s: float) -> tuple[Device, str]:
        """``rotate_device_token`` by this edge's clock."""
        return rotate_device_token(self.db_path, token, grace_s, now=self._clock(),
                                   migrate=False)

    def revoke(self, device: str) -> list[Device]:
        """Revoke through this registry: effective at once in this process."""
        revoked = revoke_device(self.db_path, device)
        self._lookup.forget({d.device_id for d in revoked})
        return revoked

    def close(self) -> None:
        self._lookup.close()
