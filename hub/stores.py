"""Registered stores, their keys (sha256 only) and their heartbeats.

A store key is generated here, shown once and never stored: only its sha256 is kept, so a
copy of the hub database does not let anyone push events as a store. Keys are 256 random
bits, so an unsalted hash is enough (no dictionary to attack).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Any

from hub.storage import HubDB

STORE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


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
    key = f"sk-{store}-{secrets.token_urlsafe(32)}"
    with db.write() as conn:
        if conn.execute("SELECT 1 FROM stores WHERE store_id = ?", (store,)).fetchone():
            raise StoreExists(f"store {store} is already registered")
        conn.execute(
            "INSERT INTO stores(store_id, name, key_sha256, created_at) VALUES (?, ?, ?, ?)",
            (store, name, token_sha256(key), db.clock()),
        )
    return key


def store_for_key(db: HubDB, key: str) -> str | None:
    """The store a bearer key belongs to, or None."""
    with db.read() as conn:
        row = conn.execute(
            "SELECT store_id FROM stores WHERE key_sha256 = ?", (token_sha256(key),)
        ).fetchone()
    return None if row is None else str(row[0])


def store_ids(db: HubDB) -> list[str]:
    with db.read() as conn:
        return [r[0] for r in conn.execute("SELECT store_id FROM stores ORDER BY store_id")]


def record_heartbeat(db: HubDB, store: str, beat: dict[str, Any]) -> dict[str, Any]:
    """Store a heartbeat; the lag is computed here from the hub's sequence and the store's
    profile feed cursor (how many changes the store has not seen yet)."""
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
    return {"lag_changes": lag, "hub_seq": str(current)}
