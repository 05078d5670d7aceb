"""``storeside-hub keygen`` / ``mint-token``: real files, real subprocess for the console script."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.tokens import TokenVerifier
from hub.cli import main


def test_keygen_writes_private_key_0600_and_public_key(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys"), "--kid", "k2025"]) == 0
    key, pub = tmp_path / "keys" / "k2025.key", tmp_path / "keys" / "k2025.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert "k2025" in capsys.readouterr().out
    before = key.read_bytes()
    assert main(["keygen", "--out", str(tmp_path / "keys"), "--kid", "k2025"]) == 2
    assert key.read_bytes() == before  # never overwritten
    assert "refusing" in capsys.readouterr().err


def test_keygen_default_kid_and_bad_kid(tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("hub-*.key"))) == 1
    assert main(["keygen", "--out", str(tmp_path), "--kid", "../../x"]) == 2
    assert "invalid key id" in capsys.readouterr().err


def test_mint_token_verifies_at_the_edge(tmp_path: Path, capsys) -> None:
    main(["keygen", "--out", str(tmp_path), "--kid", "k1"])
    capsys.readouterr()
    assert main([
        "mint-token", "--key", str(tmp_path / "k1.key"), "--subject", "cust-1",
        "--chain", "acme", "--store", "s001", "--scopes", "personalize,app_offers", "--ttl", "60",
    ]) == 0
    token = capsys.readouterr().out.strip()
    v = TokenVerifier({"k1": (tmp_path / "k1.pub").read_bytes()}, chain="acme", store="s001")
    claims = v.verify(token, time.time())
    assert claims.subject == "cust-1"
    assert claims.scopes == {"personalize", "app_offers"}
    assert claims.expires_at - claims.issued_at == 60


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--scopes", "personalize,spam"], "unknown scope"), (["--ttl", "0"], "ttl_s"),
     (["--subject", ""], "subject")],
)
def test_mint_token_bad_input_is_a_clean_error(tmp_path: Path, capsys, extra, message) -> None:
    main(["keygen", "--out", str(tmp_path), "--kid", "k1"])
    args = ["mint-token", "--key", str(tmp_path / "k1.key"), "--subject", "c", "--chain", "a",
            "--store", "s", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_mint_token_missing_key_file(tmp_path: Path, capsys) -> None:
    args = ["mint-token", "--key", str(tmp_path / "nope.key"), "--subject", "c", "--chain", "a",
            "--store", "s"]
    assert main(args) == 2
    assert "cannot read key" in capsys.readouterr().err


def test_console_script_end_to_end(tmp_path: Path) -> None:
    exe = shutil.which("storeside-hub", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "hub.cli"]
    subprocess.run([*cmd, "keygen", "--out", str(tmp_path), "--kid", "kx"], check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run(
        [*cmd, "mint-token", "--key", str(tmp_path / "kx.key"), "--subject", "c9",
         "--chain", "acme", "--store", "s1", "--scopes", ""],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    v = TokenVerifier({"kx": (tmp_path / "kx.pub").read_bytes()}, chain="acme", store="s1")
    assert v.verify(out, time.time()).scopes == frozenset()
