"""A store key rotated at the hub reaches a running edge through ``hub.store_key_file``:
no restart, no failed push, also after the old key expired (real hub, edge, Mosquitto)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, wait_until
from edge.settings import HubLinkSettings
from hub.devtools import EmbeddedHub, hub_settings
from tests.sync_env import CHAIN, QUICK_LINK, db_rows, edge_settings, pos_basket

STORE = "s001"


def write_atomically(path: Path, key: str) -> None:
    """How an operator or a config tool delivers it: a new file renamed over the old one."""
    tmp = path.with_suffix(".new")
    tmp.write_text(key + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


def auth_errors(edge: EmbeddedEdge) -> float:
    total = 0.0
    for line in httpx.get(f"{edge.url}/metrics").text.splitlines():
        if line.startswith("storeside_sync_errors_total{") and 'error="http_401"' in line:
            total += float(line.rpartition(" ")[2])
    return total


def pushed(edge: EmbeddedEdge, hub: EmbeddedHub) -> str:
    """A till basket on the edge, and its event id once the hub has it."""
    basket = pos_basket(None, [("p1", 1, 2.5)])
    assert httpx.post(f"{edge.url}/v1/pos", json=basket, timeout=10).status_code == 202
    wait_until(lambda: db_rows(hub.settings.db_path, "SELECT 1 FROM events WHERE event_id = ?",
                               basket["event_id"]), 15)
    return str(basket["event_id"])


def heartbeat(hub: EmbeddedHub, key: str) -> int:
    return hub.client(key).post(f"/v1/stores/{STORE}/heartbeat", json={}).status_code


def test_the_edge_follows_a_rotated_store_key_without_a_restart(
        tmp_path: Path, broker: PrivateBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.store_key")
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    with EmbeddedHub(hub_dir, stores=(STORE,), settings=hub_settings(hub_dir, chain=CHAIN)) as hub:
        old = hub.store_keys[STORE]
        key_file = tmp_path / "store.key"
        write_atomically(key_file, old)
        settings = edge_settings(tmp_path, STORE, hub.url, old, broker.port)
        settings = settings.model_copy(update={"hub": HubLinkSettings(
            hub_url=hub.url, store_key_file=key_file, **QUICK_LINK)})
        with EmbeddedEdge(settings) as edge:
            pushed(edge, hub)
            # rotate with a short overlap; the new key is delivered to the file at once
            answer = hub.admin().post(f"/v1/stores/{STORE}/keys/rotate", json={"overlap_s": 2})
            new = answer.json()["store_key"]
            write_atomically(key_file, new)
            wait_until(lambda: heartbeat(hub, old) == 401, 10)  # the overlap is over
            for _ in range(3):
                pushed(edge, hub)
            assert auth_errors(edge) == 0
            # a copy that keeps mtime, size and inode: the edge cannot see the change, so the
            # hub's first 401 after the overlap makes it re-read the file and retry the call
            newest = hub.admin().post(f"/v1/stores/{STORE}/keys/rotate",
                                      json={"overlap_s": 1.5}).json()["store_key"]
            assert len(newest) == len(new)
            before = key_file.stat()
            with key_file.open("r+") as f:
                f.write(newest + "\n")
            os.utime(key_file, ns=(before.st_atime_ns, before.st_mtime_ns))
            after = key_file.stat()
            assert (after.st_mtime_ns, after.st_size, after.st_ino) == (
                before.st_mtime_ns, before.st_size, before.st_ino)
            wait_until(lambda: heartbeat(hub, new) == 401, 10)
            pushed(edge, hub)
            assert auth_errors(edge) == 0
            assert edge.runtime.sync.running
    # each of the two switches was seen (once per link: sync and model updates keep their own)
    changes = [r for r in caplog.records if "store key changed" in r.getMessage()]
    assert len(changes) >= 2 and newest not in caplog.text and new not in caplog.text


def test_a_key_file_must_hold_a_key_and_a_bad_rewrite_keeps_the_last_one(tmp_path: Path) -> None:
    from edge.settings import SettingsError, load_settings
    from edge.store_key import StoreKeySource

    path = tmp_path / "store.key"
    with pytest.raises(ValueError, match="no store key"):
        StoreKeySource(path=path)
    write_atomically(path, "sk-s001-first")
    source = StoreKeySource(path=path)
    assert source.current() == "sk-s001-first"
    write_atomically(path, "")  # a half-done copy: keep what works
    assert source.current() == "sk-s001-first"
    write_atomically(path, "sk-s001-second")
    assert source.current() == "sk-s001-second"
    with pytest.raises(SettingsError, match="not both"):
        load_settings(environ={}, hub={"hub_url": "http://127.0.0.1:8090",
                                       "store_key": "sk-s001-first", "store_key_file": path})
    assert load_settings(environ={}, hub={"hub_url": "http://127.0.0.1:8090",
                                          "store_key_file": path}).hub.store_key_file == path
