"""Store broker credentials and certificates, without a broker (edge.mqtt_passwords,
edge.store_certs, storeside-edge make-certs / mqtt-app-password)."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from edge.cli import main as edge_cli
from edge.mqtt_passwords import (
    SERVICE_USERS,
    app_password,
    is_service_user,
    password_file,
    verify_line,
)

SECRET = b"s" * 32
SERVICES = {name: f"{name}-password-0123456789" for name in SERVICE_USERS}


def test_service_names_can_never_be_subjects() -> None:
    for name in SERVICE_USERS:
        assert is_service_user(name)
        with pytest.raises(ValueError):
            app_password(SECRET, name)  # no app can be issued a service's name
    assert not is_service_user("storeside-edge")  # a valid subject: refused as a service
    with pytest.raises(ValueError, match="must match"):
        password_file(SECRET, {"storeside-edge": "x" * 20}, [])


def test_password_file_is_deterministic_and_verifies() -> None:
    text, apps = password_file(SECRET, SERVICES, ["m-0123456789abcdef", "cust-001"])
    assert apps == 2 and text == password_file(SECRET, SERVICES, ["cust-001",
                                                                  "m-0123456789abcdef"])[0]
    lines = {line.split(":", 1)[0]: line for line in text.splitlines()}
    assert verify_line(lines["cust-001"], app_password(SECRET, "cust-001"))
    assert not verify_line(lines["cust-001"], app_password(b"t" * 32, "cust-001"))
    assert verify_line(lines["_storeside-pos"], SERVICES["_storeside-pos"])
    with pytest.raises(ValueError):
        password_file(SECRET, SERVICES, ["bad subject!"])
    with pytest.raises(ValueError, match="at least"):
        password_file(b"short", SERVICES, [])


def test_mosquitto_passwd_agrees(tmp_path: Path) -> None:
    """Our $7$ lines and mosquitto_passwd's verify the same way."""
    tool = Path("/usr/bin/mosquitto_passwd")
    if not tool.exists():
        pytest.skip("mosquitto_passwd not installed")
    path = tmp_path / "passwd"
    subprocess.run([str(tool), "-c", "-b", str(path), "alice01", "pw-0123456789abcdef"],
                   check=True, capture_output=True)
    assert verify_line(path.read_text(), "pw-0123456789abcdef")
    assert not verify_line(path.read_text(), "pw-0123456789abcdeX")


def test_make_certs_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ca"
    assert edge_cli(["make-certs", "--store", "s042", "--out", str(out), "--hostname",
                     "pos-s042", "--ip", "10.0.4.2"]) == 0
    assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pos-s042"]
    # a second store signed by the same (chain) CA: no new CA key written
    again = tmp_path / "s043"
    assert edge_cli(["make-certs", "--store", "s043", "--out", str(again), "--ca-cert",
                     str(out / "ca.crt"), "--ca-key", str(out / "ca.key")]) == 0
    assert not (again / "ca.key").exists()
    assert (again / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    capsys.readouterr()
    assert edge_cli(["mqtt-app-password", "--secret-file", str(secret), "cust-001"]) == 0
    assert capsys.readouterr().out.strip() == app_password(SECRET, "cust-001")
    assert edge_cli(["mqtt-app-password", "--secret-file", str(secret), "_storeside-edge"]) == 2
