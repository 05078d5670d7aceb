"""Signed bundle archives and the golden-input check, on the shipped bundle (real ORT)."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hub.tokens import generate_signing_key, private_key_pem, public_key_pem
from models.bundle import DEFAULT_BUNDLE_DIR, MANIFEST_FILE, load_bundle
from models.features import FEATURE_NAMES
from models.golden import GOLDEN_ROWS, attach_golden, golden_check, golden_matrix
from models.signing import (
    BundleRefused,
    archive_sha256,
    pack_bundle,
    read_archive,
    sign,
    unpack_archive,
    verify,
)

KID = "model-k1"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bundle") / "b"
    shutil.copytree(DEFAULT_BUNDLE_DIR, root)
    manifest = attach_golden(root)
    key = generate_signing_key()
    data = pack_bundle(root)
    sha = archive_sha256(data)
    return {
        "dir": root, "data": data, "sha": sha, "version": manifest["version"],
        "signature": sign(private_key_pem(key), manifest["version"], sha),
        "trusted": {KID: public_key_pem(key)},
    }


def _verify(s: dict, **changes: object) -> None:
    args = {"version": s["version"], "sha256": s["sha"], "signature": s["signature"],
            "key_id": KID, "trusted": s["trusted"]}
    args.update(changes)
    verify(changes.pop("data", s["data"]), **{k: v for k, v in args.items() if k != "data"})


def _refused(s: dict, **changes: object) -> str:
    with pytest.raises(BundleRefused) as caught:
        _verify(s, **changes)
    return caught.value.reason


def test_archive_is_deterministic_and_holds_exactly_the_bundle(signed: dict) -> None:
    again = pack_bundle(signed["dir"])
    assert again == signed["data"] and archive_sha256(again) == signed["sha"]
    assert set(read_archive(signed["data"])) == {"manifest.json", "model.onnx"}


def test_signed_archive_verifies_unpacks_and_loads(signed: dict, tmp_path: Path) -> None:
    _verify(signed)
    manifest = unpack_archive(signed["data"], tmp_path / "v", version=signed["version"])
    bundle = load_bundle(tmp_path / "v")
    assert bundle.version == manifest["version"] == signed["version"]
    assert manifest["golden"]["rows"] == 64


def test_unsigned_unknown_key_wrong_key_and_tampered_are_refused(signed: dict) -> None:
    assert _refused(signed, signature=None) == "unsigned"
    assert _refused(signed, signature="", key_id=KID) == "unsigned"
    assert _refused(signed, key_id="model-other") == "unknown_key"
    rogue = generate_signing_key()  # same key id, different key: a forged signature
    forged = sign(private_key_pem(rogue), signed["version"], signed["sha"])
    assert _refused(signed, signature=forged) == "bad_signature"
    assert _refused(signed, signature="not base64 !!") == "bad_signature"
    # a valid signature of another version cannot be replayed for this one
    assert _refused(signed, version="other-version") == "bad_signature"
    tampered = bytearray(signed["data"])
    tampered[len(tampered) // 2] ^= 0xFF
    assert _refused(signed, data=bytes(tampered)) == "sha256_mismatch"
    assert _refused(signed, sha256="ab" * 32) == "bad_signature"
    assert _refused(signed, sha256="../x") == "bad_assignment"


def _tar_gz(entries: dict[str, bytes], kind: bytes = tarfile.REGTYPE) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.type = len(data), kind
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue())


def test_archives_that_are_not_a_plain_bundle_are_refused(signed: dict, tmp_path: Path) -> None:
    members = read_archive(signed["data"])
    cases = {
        "corrupt_archive": [b"not a gzip at all", _tar_gz({"../evil": b"x"}),
                            _tar_gz({"sub/model.onnx": b"x"}), _tar_gz({".hidden": b"x"})],
        "bad_manifest": [_tar_gz({"model.onnx": members["model.onnx"]}),
                         _tar_gz({"manifest.json": b"{", "model.onnx": b"x"})],
    }
    for reason, blobs in cases.items():
        for i, blob in enumerate(blobs):
            with pytest.raises(BundleRefused) as caught:
                unpack_archive(blob, tmp_path / f"{reason}-{i}", version=signed["version"])
            assert caught.value.reason == reason
    with pytest.raises(BundleRefused) as caught:
        unpack_archive(signed["data"], tmp_path / "other", version="another-version")
    assert caught.value.reason == "version_mismatch"
    assert not (tmp_path / "other").exists()


def test_golden_matrix_is_fixed() -> None:
    a, b = golden_matrix(), golden_matrix()
    assert a.shape == (GOLDEN_ROWS, len(FEATURE_NAMES)) and a.dtype == np.float32
    assert np.array_equal(a, b) and np.all(np.isfinite(a))
    assert 0.2 < float(np.mean(a == 0)) < 0.4  # sparse like real rows
    assert np.array_equal(golden_matrix(10), a[:10])


def test_golden_check_passes_then_catches_a_mismatch_and_slowness(signed: dict) -> None:
    bundle = load_bundle(signed["dir"])
    good = golden_check(bundle, budget_ms=1000.0, runs=5)
    assert good.ok and good.reason is None and good.max_abs_diff <= 1e-4 and good.p50_ms > 0
    slow = golden_check(bundle, budget_ms=1e-6, runs=3)
    assert not slow.ok and slow.reason == "too_slow" and slow.p50_ms > 1e-6
    record = bundle.manifest["golden"]
    bundle.manifest["golden"] = {**record, "scores": [s + 0.01 for s in record["scores"]]}
    try:
        wrong = golden_check(bundle, budget_ms=1000.0)
        assert not wrong.ok and wrong.reason == "golden_mismatch"
        bundle.manifest["golden"] = {**record, "scores": ["x"]}
        assert golden_check(bundle, budget_ms=1000.0).reason == "golden_mismatch"
        del bundle.manifest["golden"]
        assert golden_check(bundle, budget_ms=1000.0).reason == "no_golden"
    finally:
        bundle.manifest["golden"] = record


def test_manifest_on_disk_keeps_the_golden_record(signed: dict) -> None:
    manifest = json.loads((signed["dir"] / MANIFEST_FILE).read_text())
    assert len(manifest["golden"]["scores"]) == 64
    assert all(np.isfinite(manifest["golden"]["scores"]))
