"""Settings: validated once, unknown keys refused in the file and in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.cli import main as edge_main
from edge.settings import SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_defaults_without_file() -> None:
    settings = load_settings(None, environ={})
    assert settings.store == "store-001"
    assert (
        settings.topics().staff_recommendations == "storeside/demo/store-001/staff/recommendations"
    )


def test_file_then_environment_override(tmp_path: Path) -> None:
    config = write(
        tmp_path, 'chain = "acme"\nstore = "s042"\n[mqtt]\nport = 1884\nkeepalive_s = 20\n'
    )
    settings = load_settings(config, environ={"STORESIDE_EDGE_MQTT__PORT": "1999"})
    assert settings.chain == "acme" and settings.mqtt.port == 1999
    assert settings.mqtt.keepalive_s == 20  # the rest of the table survives the override


def test_nested_dataclass_sections_from_file_and_environment(tmp_path: Path) -> None:
    config = write(
        tmp_path, "[rules]\ntop_n = 3\nquiet_hours = [22, 7]\n[visit]\nexit_grace_s = 45\n"
    )
    settings = load_settings(config, environ={"STORESIDE_EDGE_RULES__QUIET_HOURS": "20,9"})
    assert settings.rules.top_n == 3
    assert settings.rules.quiet_hours == (20, 9)
    assert settings.visit.exit_grace_s == 45.0


@pytest.mark.parametrize(
    "text",
    [
        "colour = 'blue'\n",
        "[mqtt]\nprot = 1883\n",
        "[rules]\ntop_m = 3\n",
        "[visit]\nenter_rssi = -70\n",
        "store = 'Store 42!'\n",
        "[mqtt]\nport = 70000\n",
        "not toml at all [\n",
    ],
)
def test_bad_files_are_refused_with_the_key(tmp_path: Path, text: str) -> None:
    with pytest.raises(SettingsError):
        load_settings(write(tmp_path, text), environ={})


def test_unknown_environment_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="STORESIDE_EDGE_MQQT__PORT"):
        load_settings(None, environ={"STORESIDE_EDGE_MQQT__PORT": "1"})


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, '[mqtt]\npassword = "secret"\n')
    assert edge_main(["--config", str(good), "--check-config"]) == 0
    out = capsys.readouterr().out
    assert '"password": "***"' in out and "secret" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt]\nprot = 1\n")
    assert edge_main(["--config", str(bad), "--check-config"]) == 2
    assert "prot" in capsys.readouterr().err


def test_check_config_names_a_configured_file_that_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "edge.password"
    password.write_text("s3cret\n")
    keys = tmp_path / "keys"
    keys.mkdir()
    present = write(tmp_path, f'[mqtt]\npassword_file = "{password}"\n'
                              f'[tokens]\npublic_keys_dir = "{keys}"\n')
    assert edge_main(["--config", str(present), "--check-config"]) == 0
    capsys.readouterr()
    typo = tmp_path / "typo.toml"
    typo.write_text(f'[mqtt]\npassword_file = "{password}"\ntls_ca_file = "{tmp_path}/ca.crtt"\n'
                    f'[tokens]\npublic_keys_dir = "{password}"\n')
    assert edge_main(["--config", str(typo), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "mqtt.tls_ca_file" in err and "ca.crtt is not a file" in err
    assert "tokens.public_keys_dir" in err and "is not a folder" in err
    assert "mqtt.password_file" not in err and "s3cret" not in err
