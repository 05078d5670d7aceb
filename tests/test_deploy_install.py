"""deploy/install.sh into a staging root: the tree, owners and modes, idempotence.

The script runs for real (``--prefix`` + ``--no-apt --no-users --no-venv --no-systemd``:
nothing outside the temporary root is touched). Accounts: the host has no ``storeside``
user, so the existing ``daemon`` account stands in for it; the broker group is the real
``mosquitto`` one (CI installs Mosquitto).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from edge.broker_config import DEPLOY_DIR, render_store_conf
from edge.mqtt_passwords import store_secret, verify_line
from edge.settings import load_settings

REPO = DEPLOY_DIR.parent.parent
SVC = "daemon"  # stands in for the storeside account



def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not _has_group("mosquitto"), reason="needs root and the mosquitto group"
)

# path → (mode, owner, group); "svc" = the service account
EXPECTED_TREE = {
    "etc/storeside": (0o750, "root", "svc"),
    "etc/storeside/edge.toml": (0o640, "root", "svc"),
    "etc/storeside/keys": (0o750, "root", "svc"),
    "etc/storeside/mqtt": (0o750, "root", "svc"),
    "etc/storeside/mqtt/secret": (0o600, "root", "root"),
    "etc/storeside/mqtt/_storeside-edge.password": (0o640, "root", "svc"),
    "etc/storeside/mqtt/_storeside-pos.password": (0o600, "root", "root"),
    "etc/storeside/mqtt/_storeside-staff.password": (0o600, "root", "root"),
    "etc/storeside/mqtt/ca.crt": (0o644, "root", "root"),
    "etc/storeside/ca": (0o700, "root", "root"),
    "etc/storeside/ca/ca.key": (0o600, "root", "root"),
    "etc/storeside/ca/server.key": (0o600, "root", "root"),
    "var/lib/storeside": (0o750, "svc", "svc"),
    "etc/mosquitto/storeside": (0o750, "root", "mosquitto"),
    "etc/mosquitto/storeside/store.conf": (0o640, "root", "mosquitto"),
    "etc/mosquitto/storeside/store.acl": (0o640, "root", "mosquitto"),
    "etc/mosquitto/storeside/passwd": (0o640, "root", "mosquitto"),
    "etc/mosquitto/storeside/conf.d": (0o750, "root", "mosquitto"),
    "etc/mosquitto/storeside/certs/server.key": (0o640, "root", "mosquitto"),
    "etc/mosquitto/storeside/certs/server.crt": (0o644, "root", "mosquitto"),
    "etc/mosquitto/storeside/certs/ca.crt": (0o644, "root", "mosquitto"),
    "etc/systemd/system/storeside-edge.service": (0o644, "root", "root"),
    "etc/systemd/system/storeside-mqtt-passwd.timer": (0o644, "root", "root"),
    "etc/systemd/system/storeside-mqtt-passwd.path": (0o644, "root", "root"),
    "etc/systemd/system/mosquitto.service.d/storeside.conf": (0o644, "root", "root"),
    "etc/systemd/journald.conf.d/storeside.conf": (0o644, "root", "root"),
}
SECRETS = ("etc/storeside/mqtt/secret", "etc/storeside/mqtt/_storeside-edge.password",
           "etc/storeside/ca/ca.key", "etc/storeside/ca/server.crt", "etc/storeside/edge.toml")


def install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, STORESIDE_USER=SVC, STORESIDE_GROUP=SVC, PYTHON=sys.executable)
    return subprocess.run(
        ["bash", str(REPO / "deploy" / "install.sh"), "--prefix", str(root), "--no-apt",
         "--no-users", "--no-venv", "--no-systemd", "--chain", "acme", "--store", "s042",
         "--hostname", "store-s042", "--ip", "10.0.4.2", *extra],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )


def tree(root: Path) -> dict[str, tuple[int, str, str]]:
    found = {}
    for rel in EXPECTED_TREE:
        st = (root / rel).stat()
        owner, group = pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name
        found[rel] = (stat.S_IMODE(st.st_mode), owner, group)
    return found


def digest(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in SECRETS}


def test_install_into_a_staging_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = install(root)
    assert first.returncode == 0, first.stderr
    expected = {rel: (mode, SVC if o == "svc" else o, SVC if g == "svc" else g)
                for rel, (mode, o, g) in EXPECTED_TREE.items()}
    assert tree(root) == expected
    kept = digest(root)

    # the broker runs exactly the shipped files, with the device's paths
    broker = root / "etc/mosquitto/storeside"
    assert (broker / "store.acl").read_bytes() == (DEPLOY_DIR / "store.acl").read_bytes()
    assert (broker / "store.conf").read_text() == render_store_conf(
        (DEPLOY_DIR / "store.conf").read_text(), listen="8883",
        conf_dir="/etc/mosquitto/storeside", data_dir="/var/lib/mosquitto")
    # the edge's password is in the broker's password file; the certificate names the device
    edge_password = (root / "etc/storeside/mqtt/_storeside-edge.password").read_text().strip()
    lines = {line.split(":", 1)[0]: line for line in (broker / "passwd").read_text().splitlines()}
    assert sorted(lines) == ["_storeside-edge", "_storeside-pos", "_storeside-staff"]
    assert verify_line(lines["_storeside-edge"], edge_password)
    cert = x509.load_pem_x509_certificate((broker / "certs/server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "store-s042" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"10.0.4.2", "127.0.0.1"}
    # the settings load and point at the TLS broker with the edge's own credentials
    settings = load_settings(root / "etc/storeside/edge.toml")
    assert (settings.chain, settings.store, settings.mqtt.port) == ("acme", "s042", 8883)
    assert settings.mqtt.username == "_storeside-edge"
    assert settings.mqtt.password_file == Path("/etc/storeside/mqtt/_storeside-edge.password")
    # the trigger the edge writes is the file the path unit watches
    path_unit = (root / "etc/systemd/system/storeside-mqtt-passwd.path").read_text()
    assert f"PathChanged={settings.mqtt.members_changed_file}\n" in path_unit
    service = (root / "etc/systemd/system/storeside-mqtt-passwd.service").read_text()
    assert f"--trigger-file {settings.mqtt.members_changed_file} " in service

    # twice is safe: same secrets, certificates and settings, same owners and modes
    (root / "etc/storeside/edge.toml").chmod(0o644)  # drifted: put back
    second = install(root)
    assert second.returncode == 0, second.stderr
    assert digest(root) == kept and tree(root) == expected


def test_refuses_bad_input(tmp_path: Path) -> None:
    result = install(tmp_path / "root", "--store", "S 42")  # the last --store wins
    assert result.returncode == 2 and "bad --store" in result.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_units_verify() -> None:
    units = sorted(str(p) for p in (REPO / "deploy/systemd").glob("storeside-*"))
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True,
                            text=True, timeout=60, check=False)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "is not executable" not in line]  # /opt/storeside is not on this host
    assert problems == []


def test_hub_derived_mqtt_secret(tmp_path: Path) -> None:
    """--mqtt-secret-file installs the secret the hub derives (storeside-hub
    store-mqtt-secret), over a generated one; a short one is refused before anything."""
    root, given = tmp_path / "root", tmp_path / "s042.secret"
    assert install(root).returncode == 0  # a standalone store first: a random secret
    generated = (root / "etc/storeside/mqtt/secret").read_bytes()
    derived = store_secret(b"chain-seed-0123456789abcdef", "s042")
    given.write_bytes(derived + b"\n")
    result = install(root, "--mqtt-secret-file", str(given))
    assert result.returncode == 0, result.stderr
    secret = root / "etc/storeside/mqtt/secret"
    assert secret.read_bytes() == derived != generated
    assert (stat.S_IMODE(secret.stat().st_mode), secret.stat().st_uid) == (0o600, 0)
    assert install(root).returncode == 0  # kept by a later update without the option
    assert secret.read_bytes() == derived
    given.write_text("short\n")
    result = install(tmp_path / "other", "--mqtt-secret-file", str(given))
    assert result.returncode == 2 and "at least 16" in result.stderr
    assert not (tmp_path / "other").exists()
