"""What every API key of ours shares, edge (admin/till tokens) and hub (role keys).

No I/O of its own (``revoke_matching`` runs in the caller's transaction).

A key is shown once and kept as a sha256 digest only; its record says which role it
carries and whether it still counts. Both services store the record in their own SQLite
(``edge.api_keys``, ``hub.api_keys``); the rules of a new key and of its state live here
once, so the two cannot drift apart.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

LABEL_MAX = 64


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    role: str
    label: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None = None  # the edge records it; the hub does not (yet)

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_dict(self, now: float) -> dict[str, object]:
        return {"key_id": self.key_id, "role": self.role, "label": self.label,
                "created_at": self.created_at, "expires_at": self.expires_at,
                "revoked_at": self.revoked_at, "last_used_at": self.last_used_at,
                "state": self.state(now)}


def check_label(label: str) -> str:
    """A label is what an operator reads in ``list``: short, printable, not blank."""
    label = label.strip()
    if not label or len(label) > LABEL_MAX or not label.isprintable():
        raise ValueError(f"label must be 1..{LABEL_MAX} printable characters")
    return label


def new_api_key(
    role: str, label: str, *, roles: Iterable[str], now: float, expires_in_s: float | None,
    token_prefix: str, id_prefix: str,
) -> tuple[ApiKey, str]:
    """A validated record and its raw token. The token's prefix makes a leaked one
    recognisable in a log line or by a secret scanner."""
    allowed = tuple(roles)
    if role not in allowed:
        raise ValueError(f"role must be one of {', '.join(allowed)}")
    label = check_label(label)
    if expires_in_s is not None and not expires_in_s > 0:
        raise ValueError("expires_in must be > 0")
    token = token_prefix + secrets.token_urlsafe(32)
    expires_at = None if expires_in_s is None else now + expires_in_s
    return ApiKey(id_prefix + secrets.token_hex(4), role, label, now, expires_at, None), token


def when(ts: float | None) -> str:
    """A time for an operator's terminal: UTC, to the second; "-" for none."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def created_lines(key: ApiKey, token: str, noun: str) -> list[str]:
    """What ``create`` prints: the record, then the token on a line of its own (easy to
    copy or to pipe into a secret store); the only time the token exists in clear."""
    until = f", expires {when(key.expires_at)}" if key.expires_at else ""
    return [f"{key.role} {noun} {key.key_id} ({key.label}){until}; shown once, keep it secret:",
            token]


def table_lines(keys: Iterable[ApiKey], now: float) -> list[str]:
    """What ``list`` prints: one key a line, revoked and expired ones included."""
    lines = [f"{'KEY':<13} {'ROLE':<8} {'STATE':<8} {'CREATED':<21} {'EXPIRES':<21} "
             f"{'LAST USED':<21} LABEL"]
    lines += [f"{k.key_id:<13} {k.role:<8} {k.state(now):<8} {when(k.created_at):<21} "
              f"{when(k.expires_at):<21} {when(k.last_used_at):<21} {k.label}" for k in keys]
    return lines


def revoke_matching(conn: sqlite3.Connection, key: str, now: float, columns: str) -> list[ApiKey]:
    """Inside the caller's write transaction: revoke the unrevoked key(s) whose id is
    ``key``, or else whose label is (operators remember labels). ``columns`` lists the
    service's ``api_keys`` columns in ``ApiKey`` order (the hub has no ``last_used_at``)."""
    rows = conn.execute(
        f"SELECT {columns} FROM api_keys WHERE key_id = ? AND revoked_at IS NULL", (key,)
    ).fetchall() or conn.execute(
        f"SELECT {columns} FROM api_keys WHERE label = ? AND revoked_at IS NULL", (key,)
    ).fetchall()
    conn.executemany("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?",
                     [(now, row[0]) for row in rows])
    return [ApiKey(row[0], row[1], row[2], row[3], row[4], now, row[6] if len(row) > 6 else None)
            for row in rows]
