"""Tablet registry on a real SQLite file: hashes only, revocation (pairing codes and the
CLI: tests/test_pairing.py)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edge.devices import (
    DeviceRegistry,
    hash_token,
    list_devices,
    pair_device,
    revoke_device,
)
from edge.migrations import current_version
from edge.probe import wait_until


def test_pair_device_migrates_a_new_file_and_stores_only_the_hash(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    token = pair_device(db, "Tablet 1")
    assert token.startswith("sst_") and len(token) > 40
    with sqlite3.connect(db) as conn:
        assert current_version(conn) >= 3
        rows = conn.execute("SELECT label, token_hash, revoked_at FROM devices").fetchall()
        dump = "\n".join(conn.iterdump())
    assert rows == [("Tablet 1", hash_token(token), None)]
    assert token not in dump
    assert pair_device(db, "Tablet 1") != token  # a second tablet with the same label


def test_bad_labels_are_refused(tmp_path: Path) -> None:
    for label in ("", "   ", "x" * 65, "bad\nlabel"):
        with pytest.raises(ValueError):
            pair_device(tmp_path / "edge.db", label)


def test_registry_accepts_active_tokens_and_notices_revocation_within_a_second(
    tmp_path: Path,
) -> None:
    db = tmp_path / "edge.db"
    token = pair_device(db, "Tablet 1")
    registry = DeviceRegistry(db)
    try:
        device = registry.authenticate(token)
        assert device is not None and device.label == "Tablet 1"
        assert registry.authenticate(token + "x") is None
        assert registry.authenticate("") is None and registry.authenticate(None) is None
        # revoked by another process (the CLI): the cache expires within ttl_s
        revoked_at = time.monotonic()
        assert [d.device_id for d in revoke_device(db, device.device_id)] == [device.device_id]
        wait_until(lambda: registry.authenticate(token) is None, 1.0, interval=0.01)
        assert time.monotonic() - revoked_at <= 1.0
    finally:
        registry.close()


def test_revoking_through_the_registry_is_immediate_and_by_label(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    first, second = pair_device(db, "Till tablet"), pair_device(db, "Shoes")
    registry = DeviceRegistry(db, ttl_s=3600)
    try:
        assert registry.authenticate(first) and registry.authenticate(second)
        assert [d.label for d in registry.revoke("Till tablet")] == ["Till tablet"]
        assert registry.authenticate(first) is None
        assert registry.authenticate(second) is not None
        assert registry.revoke("no such tablet") == []
    finally:
        registry.close()


def test_last_seen_is_recorded_but_not_on_every_request(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    token = pair_device(db, "Tablet 1")
    wall = [1_800_000_000.0]
    registry = DeviceRegistry(db, ttl_s=0.0, touch_every_s=60, clock=lambda: wall[0])
    try:
        registry.authenticate(token)
        assert list_devices(db)[0].last_seen_at == wall[0]
        first = wall[0]
        wall[0] += 30
        registry.authenticate(token)
        assert list_devices(db)[0].last_seen_at == first
        wall[0] += 31
        registry.authenticate(token)
        assert list_devices(db)[0].last_seen_at == wall[0]
    finally:
        registry.close()

