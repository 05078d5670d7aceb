"""Check-in token signing keys: files for the private halves, the hub DB for their lifecycle.

Exactly one key is *active* (``retire_at IS NULL``): it signs new tokens. ``rotate`` makes a
new key active and gives the previous one a ``retire_at`` of now + overlap: until then both
are in the JWKS, so tokens already issued and edges that have not fetched the new JWKS yet
keep working; afterwards the old key leaves the JWKS and edges drop it (retired).
Private keys never enter the database (a copy of the DB must not let anyone mint tokens).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.storage import HubDB
from hub.tokens import (
    check_kid,
    generate_signing_key,
    private_key_pem,
    public_key_jwk,
    public_key_pem,
)

logger = logging.getLogger(__name__)


class SigningKeyMissing(RuntimeError):
    """No usable signing key (run ``storeside-hub init``), or a key file is missing."""


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never world-readable for a moment) and
    refuse to overwrite: clobbering a signing key would orphan every store's trust in it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise FileExistsError(f"{path} already exists; refusing to overwrite a key") from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, mode)  # the umask may have narrowed/widened it


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    public_pem: bytes
    created_at: float
    retire_at: float | None


class KeyRing:
    """The hub's signing keys; thread-safe (private keys are cached per kid)."""

    def __init__(self, db: HubDB, keys_dir: Path, overlap_s: float) -> None:
        self.db = db
        self.keys_dir = Path(keys_dir)
        self.overlap_s = float(overlap_s)
        self._private: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _new_kid(self, now: float) -> str:
        stamp = time.strftime("hub-%Y%m%d-%H%M%S", time.gmtime(now))
        return f"{stamp}-{os.urandom(3).hex()}"

    def create_key(self, kid: str | None = None) -> SigningKey:
        """A new key pair; it becomes the active key and the previous active one is given
        ``retire_at = now + overlap`` (so this is also the rotation)."""
        now = self.db.clock()
        kid = check_kid(kid or self._new_kid(now))
        key = generate_signing_key()
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        write_new(self.keys_dir / f"{kid}.key", private_key_pem(key), 0o600)
        pub = public_key_pem(key)
        write_new(self.keys_dir / f"{kid}.pub", pub, 0o644)
        with self.db.write() as conn:
            conn.execute(
                "UPDATE signing_keys SET retire_at = ? WHERE retire_at IS NULL",
                (now + self.overlap_s,),
            )
            conn.execute(
                "INSERT INTO signing_keys(kid, public_pem, created_at, retire_at) "
                "VALUES (?, ?, ?, NULL)", (kid, pub.decode("ascii"), now),
            )
        logger.info("signing key %s is now active", kid)
        return SigningKey(kid, pub, now, None)

    rotate = create_key

    def valid_keys(self) -> list[SigningKey]:
        """Keys a verifier must accept now: the active one and those still in overlap."""
        now = self.db.clock()
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT kid, public_pem, created_at, retire_at FROM signing_keys "
                "WHERE retire_at IS NULL OR retire_at > ? ORDER BY created_at DESC", (now,)
            ).fetchall()
        return [SigningKey(r[0], r[1].encode("ascii"), r[2], r[3]) for r in rows]

    def all_keys(self) -> list[SigningKey]:
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT kid, public_pem, created_at, retire_at FROM signing_keys "
                "ORDER BY created_at"
            ).fetchall()
        return [SigningKey(r[0], r[1].encode("ascii"), r[2], r[3]) for r in rows]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_key_jwk(k.kid, k.public_pem) for k in self.valid_keys()]}

    def active(self) -> tuple[str, bytes]:
        """(kid, private PEM) of the key that signs new tokens. Read from the DB every time
        (a cheap indexed query), so a ``rotate-keys`` run by another process takes effect
        at once without restarting the hub."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT kid FROM signing_keys WHERE retire_at IS NULL "
                "ORDER BY created_at DESC LIMIT 1"
            ).fetchone()
        if row is None:
            raise SigningKeyMissing("no active signing key; run `storeside-hub init`")
        kid = str(row[0])
        with self._lock:
            pem = self._private.get(kid)
            if pem is None:
                path = self.keys_dir / f"{kid}.key"
                try:
                    pem = path.read_bytes()
                except OSError as exc:
                    raise SigningKeyMissing(
                        f"private key of {kid} not readable: {exc.strerror}"
                    ) from exc
                self._private[kid] = pem
        return kid, pem
