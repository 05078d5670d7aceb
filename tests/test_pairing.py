"""One-time tablet pairing codes on a real SQLite file: single use, expiry, concurrent
redeems, the per-address attempt limit, the terminal QR code, and the CLI."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.cli import main as edge_main
from edge.devices import (
    DeviceRegistry,
    PairingRefused,
    create_pairing_code,
    hash_token,
    list_devices,
    pending_pairing_codes,
    redeem_pairing_code,
)
from edge.pairing_codes import ALPHABET, CODE_LENGTH, format_code, new_code, normalize_code
from edge.qr_text import terminal_qr
from models.ratelimit import RateLimiter

T0 = 1_800_000_000.0


def refused(db: Path, code: str, **kwargs: float) -> str:
    with pytest.raises(PairingRefused) as info:
        redeem_pairing_code(db, code, **kwargs)
    return info.value.reason


def test_codes_are_short_unambiguous_and_read_back_however_typed() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == CODE_LENGTH and set(c) <= set(ALPHABET) for c in codes)
    assert not set(ALPHABET) & set("01OIL")
    assert format_code("K7QM4XPD") == "K7QM-4XPD"
    for typed in ("K7QM-4XPD", "k7qm 4xpd", " K7QM4XPD ", "k7qm-4xpd\n"):
        assert normalize_code(typed) == "K7QM4XPD", typed
    for typed in ("", "K7QM-4XP", "K7QM-4XPD2", "K7QM-4XP0", "sst_" + "A" * 40, "K" * 100):
        assert normalize_code(typed) is None, typed


def test_a_code_is_stored_hashed_pairs_one_device_and_only_once(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    code = create_pairing_code(db, "Tablet 1", 600, now=T0)
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
        stored = conn.execute("SELECT code_hash, label, expires_at FROM pairing_codes").fetchall()
    assert code not in dump and format_code(code) not in dump
    assert stored == [(hash_token(code), "Tablet 1", T0 + 600)]
    assert [p.label for p in pending_pairing_codes(db, now=T0 + 1)] == ["Tablet 1"]

    device, token = redeem_pairing_code(db, format_code(code).lower(), now=T0 + 5)
    assert device.label == "Tablet 1" and token.startswith("sst_") and code not in token
    assert [d.device_id for d in list_devices(db)] == [device.device_id]
    registry = DeviceRegistry(db)
    try:
        assert registry.authenticate(token) == device
        assert registry.authenticate(code) is None  # the code itself is no credential
    finally:
        registry.close()
    assert refused(db, code, now=T0 + 6) == "code_used"
    assert len(list_devices(db)) == 1 and pending_pairing_codes(db, now=T0 + 6) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT used_at, device_id FROM pairing_codes").fetchall() == [
            (T0 + 5, device.device_id)]


def test_expired_unknown_and_malformed_codes_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    code = create_pairing_code(db, "Tablet 1", 60, now=T0)
    assert refused(db, code, now=T0 + 60) == "code_expired"
    assert pending_pairing_codes(db, now=T0 + 60) == []
    assert refused(db, new_code(), now=T0) == "unknown_code"
    assert refused(db, "not a code", now=T0) == "malformed_code"
    assert list_devices(db) == []
    other = create_pairing_code(db, "Tablet 2", 60, now=T0)
    device, _ = redeem_pairing_code(db, other, "Shoes desk", now=T0 + 59.9)
    assert device.label == "Shoes desk"  # the redeemer may name the device
    with pytest.raises(ValueError):
        create_pairing_code(db, "Tablet 3", 0)
    with pytest.raises(ValueError):
        create_pairing_code(db, "bad\nlabel", 60)


def test_concurrent_redeems_of_one_code_pair_exactly_one_device(tmp_path: Path) -> None:
    db = tmp_path / "edge.db"
    code = create_pairing_code(db, "Tablet 1", 600)
    n = 8
    start = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def redeem() -> None:
        start.wait(5)
        try:
            _, token = redeem_pairing_code(db, code, migrate=False)
            outcome = "paired:" + token
        except PairingRefused as exc:
            outcome = exc.reason
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=redeem) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [o for o in outcomes if o.startswith("paired:")]
    assert len(outcomes) == n and len(winners) == 1
    assert sorted(set(outcomes) - set(winners)) == ["code_used"]
    devices = list_devices(db)
    assert len(devices) == 1
    with sqlite3.connect(db) as conn:
        (device_id,) = conn.execute("SELECT device_id FROM pairing_codes").fetchone()
    assert device_id == devices[0].device_id


def test_rate_limiter_is_a_token_bucket_per_address() -> None:
    now = [0.0]
    limiter = RateLimiter(10, clock=lambda: now[0], max_keys=3)
    assert [limiter.take("10.0.0.7") for _ in range(10)] == [0.0] * 10
    wait = limiter.take("10.0.0.7")
    assert wait == pytest.approx(6.0)  # one attempt per 6 s at 10/min
    assert limiter.take("10.0.0.8") == 0.0  # another address has its own bucket
    now[0] += 6.0
    assert limiter.take("10.0.0.7") == 0.0 and limiter.take("10.0.0.7") > 0
    now[0] += 600  # a long quiet time refills only up to the burst
    assert [limiter.take("10.0.0.7") for _ in range(11)].count(0.0) == 10
    for address in ("a", "b", "c", "d"):
        limiter.take(address)
    assert len(limiter) <= 3  # bounded memory: full (idle) buckets and the oldest go
    assert limiter.take("10.0.0.7") > 0  # the busy one was kept
    with pytest.raises(ValueError):
        RateLimiter(0)


def text_to_image(text: str, scale: int = 8) -> np.ndarray:
    """The terminal picture back to pixels: a light half block is light, a space dark."""
    top = {"█": 255, "▀": 255, "▄": 0, " ": 0}
    bottom = {"█": 255, "▀": 0, "▄": 255, " ": 0}
    rows = []
    for line in text.splitlines():
        rows.append([top[c] for c in line])
        rows.append([bottom[c] for c in line])
    image = np.asarray(rows, np.uint8)
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def test_the_terminal_qr_code_scans_as_the_link() -> None:
    link = "http://store-17.local:8080/tablet/pair?code=K7QM4XPD"
    text = terminal_qr(link)
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1 and set(text) <= set("█▀▄ \n")
    assert lines[0] == "█" * len(lines[0])  # the quiet zone is drawn (light)
    decoded, _points, _ = cv2.QRCodeDetector().detectAndDecode(text_to_image(text))
    assert decoded == link


def test_cli_pair_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "var" / "edge.db"  # the folder does not exist yet
    config = tmp_path / "edge.toml"
    config.write_text(f'db_path = "{db}"\n\n[http]\nhost = "127.0.0.1"\nport = 8099\n'
                      "\n[tablet]\npairing_ttl_s = 900\n")
    assert edge_main(["pair-tablet", "--config", str(config), "--label", "Tablet 1"]) == 0
    out = capsys.readouterr().out
    assert "sst_" not in out and "works once, for 15 min" in out
    url = next(word for word in out.split() if word.startswith("http://") and "code=" in word)
    code = url.split("code=", 1)[1]
    assert url == f"http://127.0.0.1:8099/tablet/pair?code={code}"
    assert format_code(code) in out and "█" in out  # the code to type and the QR code
    assert list_devices(db) == []  # nothing is paired before the code is used

    assert edge_main(["list-tablets", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "PENDING" in listing and "Tablet 1" in listing and code not in listing
    assert "in 15 min" in listing

    device, _ = redeem_pairing_code(db, code)
    assert edge_main(["list-tablets", "--config", str(config)]) == 0
    listing = capsys.readouterr().out
    assert device.device_id in listing and "PENDING" not in listing

    assert edge_main(["revoke-tablet", "--config", str(config), device.device_id]) == 0
    assert list_devices(db)[0].revoked_at is not None
    assert edge_main(["revoke-tablet", "--config", str(config), device.device_id]) == 1
    assert edge_main(["pair-tablet", "--config", str(config), "--label", "T2", "--no-qr",
                      "--ttl", "120"]) == 0
    out = capsys.readouterr().out
    assert "█" not in out and "for 2 min" in out
    assert edge_main(["pair-tablet", "--config", str(config), "--label", " "]) == 2
    capsys.readouterr()
