"""Signed model bundles: one deterministic archive, its sha256, an Ed25519 signature.

A model is code-like: whatever the hub publishes runs in every store. So the edge runs
nothing the hub's *model-signing* key did not sign. That key is separate from the check-in
token keys (``storeside-hub model-keygen``): a leaked token key lets someone forge a
check-in at worst, never push a model to a chain.

What is signed is a short canonical statement (purpose, version, archive sha256), not the
archive: the signature stays small enough for the assignment JSON, and the sha256 binds it
to the bytes. The archive is a gzip'd tar of exactly the bundle's files with fixed metadata,
so packing the same bundle twice gives the same bytes (and the same sha256).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature

from hub.tokens import check_kid, load_private_key, load_public_key
from models.bundle import MANIFEST_FILE, BundleError, check_manifest

PURPOSE = "storeside-model-bundle"
STATEMENT_VERSION = 1
MAX_ARCHIVE_BYTES = 64 << 20  # a 20-tree bundle is ~25 kB; refuse anything absurd
MAX_MEMBERS = 8
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # becomes a directory name


class BundleRefused(Exception):
    """A bundle the edge must not run; ``reason`` is a short code reported to the hub."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def check_version(version: object) -> str:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ValueError(f"invalid model version {version!r} (letters, digits, '.', '_', '-')")
    return version


def archive_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_bundle(bundle_dir: Path | str) -> bytes:
    """The bundle directory's manifest and model file as a deterministic ``tar.gz``."""
    root = Path(bundle_dir)
    manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    names = sorted({MANIFEST_FILE, str(manifest["model_file"])})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = (root / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    # mtime=0 and no file name in the gzip header: same input, same bytes
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def read_archive(data: bytes) -> dict[str, bytes]:
    """Member name → bytes; only plain files with plain names (no paths, links, devices)."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise BundleRefused("corrupt_archive", f"archive is {len(data)} bytes")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    raise BundleRefused("corrupt_archive", "too many files")
                if not info.isfile() or Path(info.name).name != info.name or (
                        info.name.startswith(".")):
                    raise BundleRefused("corrupt_archive", f"unexpected entry {info.name!r}")
                handle = tar.extractfile(info)
                if handle is None:
                    raise BundleRefused("corrupt_archive", f"unreadable entry {info.name!r}")
                members[info.name] = handle.read()
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise BundleRefused("corrupt_archive", str(exc)) from exc
    return members


def unpack_archive(data: bytes, dest: Path, *, version: str) -> dict[str, Any]:
    """Write the archive's files into ``dest`` (must not exist); returns the manifest.

    The manifest must name the version the signed statement names: a validly signed
    archive of version A served as version B is refused.
    """
    members = read_archive(data)
    if MANIFEST_FILE not in members:
        raise BundleRefused("bad_manifest", f"no {MANIFEST_FILE} in the archive")
    try:
        manifest = json.loads(members[MANIFEST_FILE].decode("utf-8"))
        check_manifest(manifest)
    except (UnicodeDecodeError, json.JSONDecodeError, BundleError) as exc:
        raise BundleRefused("bad_manifest", str(exc)) from exc
    if manifest["version"] != version:
        raise BundleRefused("version_mismatch",
                            f"archive holds {manifest['version']!r}, assigned {version!r}")
    if manifest["model_file"] not in members:
        raise BundleRefused("bad_manifest", f"{manifest['model_file']} missing")
    dest.mkdir(parents=True)
    for name, blob in members.items():
        (dest / name).write_bytes(blob)
    return dict(manifest)


def statement(version: str, sha256: str) -> bytes:
    """The exact bytes that are signed: canonical JSON, keys sorted, no spaces."""
    return json.dumps(
        {"purpose": PURPOSE, "sha256": sha256, "v": STATEMENT_VERSION, "version": version},
        sort_keys=True, separators=(",", ":"),
    ).encode("ascii")


def sign(private_pem: bytes, version: str, sha256: str) -> str:
    """Base64url (unpadded) Ed25519 signature over ``statement(version, sha256)``."""
    check_version(version)
    if not _SHA256.match(sha256):
        raise ValueError("sha256 must be 64 lowercase hex digits")
    raw = load_private_key(private_pem).sign(statement(version, sha256))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def verify(
    data: bytes,
    *,
    version: str,
    sha256: str,
    signature: str | None,
    key_id: str | None,
    trusted: Mapping[str, bytes],
) -> None:
    """Raise ``BundleRefused`` unless ``data`` is exactly what a trusted key signed."""
    if not signature or not key_id:
        raise BundleRefused("unsigned", "the assignment carries no signature")
    try:
        check_version(version)
        check_kid(key_id)
    except ValueError as exc:
        raise BundleRefused("bad_assignment", str(exc)) from exc
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise BundleRefused("bad_assignment", "sha256 is not 64 lowercase hex digits")
    pem = trusted.get(key_id)
    if pem is None:
        raise BundleRefused("unknown_key", f"key {key_id!r} is not trusted here")
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        load_public_key(pem).verify(raw, statement(version, sha256))
    except (ValueError, InvalidSignature) as exc:
        raise BundleRefused("bad_signature", f"signature does not verify with {key_id!r}") from exc
    actual = archive_sha256(data)
    if actual != sha256:
        raise BundleRefused("sha256_mismatch", f"signed {sha256[:12]}…, received {actual[:12]}…")
