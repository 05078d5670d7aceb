"""The edge's ``[hub]`` settings: standalone by default, the store key kept secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.settings import SettingsError, load_settings

KEY = "k-3f9a1c0e5b7d2468-secret"


def test_standalone_by_default_and_a_hub_needs_its_store_key() -> None:
    settings = load_settings(environ={})
    assert settings.hub.hub_url is None and not settings.hub.enabled
    assert (settings.hub.poll_interval_s, settings.hub.push_interval_s,
            settings.hub.batch_size, settings.hub.backoff_initial_s,
            settings.hub.backoff_max_s, settings.hub.timeout_s) == (2.0, 1.0, 500, 1.0, 15.0, 5.0)
    with pytest.raises(SettingsError, match="store_key is required"):
        load_settings(environ={"STORESIDE_EDGE_HUB__HUB_URL": "http://127.0.0.1:8090"})
    with pytest.raises(SettingsError, match="batch_size"):
        load_settings(environ={"STORESIDE_EDGE_HUB__BATCH_SIZE": "5000"})  # the hub takes 1000


def test_the_store_key_is_never_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"STORESIDE_EDGE_HUB__HUB_URL": "http://127.0.0.1:8090",
           "STORESIDE_EDGE_HUB__STORE_KEY": KEY}
    settings = load_settings(environ=env)
    assert settings.hub.store_key == KEY and KEY not in repr(settings)
    with pytest.raises(SettingsError) as refused:  # an error elsewhere in the section
        load_settings(environ={**env, "STORESIDE_EDGE_HUB__BACKOFF_MAX_S": "0.1"})
    assert KEY not in str(refused.value)
    config = tmp_path / "edge.toml"
    config.write_text(f'[hub]\nhub_url = "http://127.0.0.1:8090"\nstore_key = "{KEY}"\n')
    assert main(["--config", str(config), "--check-config"]) == 0
    shown = capsys.readouterr().out
    assert KEY not in shown and json.loads(shown)["hub"]["store_key"] == "***"
