"""Registered stores, their keys (sha256 only) and their heartbeats.

A store key is generated here, shown once and never stored: only its sha256 is kept, so a
copy of the hub database does not let anyone push events as a store. Keys are 256 random
bits, so an unsalted hash is enough (no dictionary to attack).

A store may hold several valid keys (``store_keys``, migration 30): ``rotate_store_key``
makes a new one, valid at once, and lets the previous ones expire after an overlap (the
time to deliver the new key to the store; ``hub.store_key_file`` on the edge picks it up
without a restart). An overlap of 0 ends the old keys at once (a leaked key).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from hub.storage import HubDB

STORE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
KEY_RECORD_S = 30 * 86_400  # expired store keys are kept this long (when did it rotate)


class StoreExists(ValueError):
    """``add-store`` for a store id that is already registered."""


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_store_id(store: str) -> str:
    if not isinstance(store, str) or not STORE_ID.match(store):
        raise ValueError(f"invalid store id {store!r} (^[a-z0-9][a-z0-9_-]{{0,31}}$)")
    return store


def add_store(db: HubDB, store: str, name: str | None = None) -> str:
    """Register ``store``; returns its new key (the only time it exists in clear)."""
    check_store_id(store)
    key = new_store_key(store)
    with db.write() as conn:
        if conn.execute("SELECT 1 FROM stores WHERE store_id = ?", (store,)).fetchone():
            raise StoreExists(f"store {store} is already registered")
        conn.execute(
            "INSERT INTO stores(store_id, name, key_sha256, created_at) VALUES (?, ?, ?, ?)",
            (store, name, token_sha256(key), db.clock()),
        )
        conn.execute("INSERT INTO store_keys(key_sha256, store_id, created_at) VALUES (?, ?, ?)",
                     (token_sha256(key), store, db.clock()))
    return key


def new_store_key(store: str) -> str:
    return f"sk-{store}-{secrets.token_urlsafe(32)}"


def rotate_store_key(db: HubDB, store: str, overlap_s: float) -> tuple[str, float]:
    """A new key for ``store`` (valid at once) and when its previous keys stop working
    (now + ``overlap_s``; a key already due to expire sooner keeps its earlier end).
    ``LookupError`` for an unknown store. Keys expired for 30 days are deleted."""
    if not overlap_s >= 0:
        raise ValueError("overlap must be >= 0")
    key = new_store_key(check_store_id(store))
    now = db.clock()
    until = now + overlap_s
    with db.write() as conn:
        if not conn.execute("SELECT 1 FROM stores WHERE store_id = ?", (store,)).fetchone():
            raise LookupError(store)
        conn.execute(
            "UPDATE store_keys SET expires_at = ? WHERE store_id = ?"
            " AND (expires_at IS NULL OR expires_at > ?)", (until, store, until))
        conn.execute("DELETE FROM store_keys WHERE expires_at < ?", (now - KEY_RECORD_S,))
        conn.execute("INSERT INTO store_keys(key_sha256, store_id, created_at) VALUES (?, ?, ?)",
                     (token_sha256(key), store, now))
        conn.execute("UPDATE stores SET key_sha256 = ? WHERE store_id = ?",
                     (token_sha256(key), store))
    return key, until


def store_key_list(db: HubDB, store: str) -> list[dict[str, Any]]:
    """The store's keys, newest first: fingerprint (first 12 hex of the sha256), dates, state."""
    now = db.clock()
    with db.read() as conn:
        rows = conn.execute(
            "SELECT key_sha256, created_at, expires_at FROM store_keys WHERE store_id = ?"
            " ORDER BY created_at DESC", (store,)).fetchall()
    return [{"fingerprint": digest[:12], "created_at": created, "expires_at": expires,
             "state": "active" if expires is None or expires > now else "expired"}
            for digest, created, expires in rows]


def store_for_key(db: HubDB, key: str) -> str | None:
    """The store a bearer key belongs to, or None (unknown or past its overlap)."""
    return store_for_digest(db, token_sha256(key))


def store_for_digest(db: HubDB, digest: str) -> str | None:
    with db.read() as conn:
        row = conn.execute(
            "SELECT store_id FROM store_keys WHERE key_sha256 = ?"
            " AND (expires_at IS NULL OR expires_at > ?)", (digest, db.clock()),
        ).fetchone()
    return None if row is None else str(row[0])


def store_ids(db: HubDB) -> list[str]:
    with db.read() as conn:
        return [r[0] for r in conn.execute("SELECT store_id FROM stores ORDER BY store_id")]


def record_heartbeat(db: HubDB, store: str, beat: dict[str, Any]) -> dict[str, Any]:
    """Store a heartbeat; the lag is computed here from the hub's sequence and the store's
    profile feed cursor (how many changes the store has not seen yet). ``hub_time`` (the
    hub's clock) lets the edge measure its clock skew, which decides whether hub-issued
    check-in tokens verify there (edge.sync)."""
    feeds = beat.get("feeds") or {}
    with db.write() as conn:
        current = db.current_seq(conn)
        try:
            lag = max(0, current - int(feeds.get("profiles", "")))
        except (TypeError, ValueError):
            lag = None
        conn.execute(
            "INSERT OR REPLACE INTO store_status(store_id, received_at, model_version, state, "
            "outbox_pending, feeds, lag_changes, staleness_s, active_visits) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (store, db.clock(), beat.get("model_version"), beat.get("state"),
             beat.get("outbox_pending"), json.dumps(feeds), lag, beat.get("staleness_s"),
             beat.get("active_visits")),
        )
    return {"lag_changes": lag, "hub_seq": str(current), "hub_time": db.clock()}
