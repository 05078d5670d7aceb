"""A first-time visitor's app logs in to the store broker seconds after the hub issued its
check-in token, on real parts: a hub with the chain's MQTT seed, an edge synced to it on
the shipped TLS broker whose store secret is the hub-derived one.

The member has never been at this store: not in the edge's cache, not in the broker's
password file. The app backend asks the hub for a check-in token and gets the MQTT login
with it; the hub announces the member at the store; the edge's next profile poll brings
them and writes the trigger file; the test then does what storeside-mqtt-passwd.path does
(mqtt-passwd + broker reload: systemd itself cannot run here) as soon as the file changes;
the app connects over TLS, checks in, the staff card arrives. The same login is refused
at another store's broker.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

from edge.acl_check import AclClient
from edge.broker_config import StoreBrokerEnv, broker_group, store_broker_env
from edge.devtools import EmbeddedEdge
from edge.mqtt_cli import main as mqtt_cli
from edge.mqtt_passwords import store_secret
from edge.probe import wait_until
from edge.rules import RulesConfig
from edge.settings import EdgeSettings, MqttSettings
from edge.topics import Topics
from hub.devtools import EmbeddedHub, hub_settings
from tests.sync_env import CHAIN, db_rows, edge_settings, import_members, list_products, shelf
from tests.sync_env import subject_of as member

SEED = b"e2e-chain-seed-0123456789abcdefgh"
ANA = {"loyalty_number": "L-2001", "first_name": "Ana", "tier": "gold", "home_store": "s001"}
BEN = {"loyalty_number": "L-2002", "first_name": "Ben", "tier": "silver", "home_store": "s002"}


def _stamp(path: Path) -> tuple[int, str] | None:
    return (path.stat().st_mtime_ns, path.read_text()) if path.exists() else None


def _login(env: StoreBrokerEnv, user: str, password: str) -> tuple[str, AclClient | None]:
    client = AclClient("127.0.0.1", env.broker.port, env.ca_file, user, password)
    outcome = client.connect()
    if outcome == "Success":
        return outcome, client
    client.close()
    return outcome, None


def _edge(tmp_path: Path, hub: EmbeddedHub, env: StoreBrokerEnv, services: Path,
          trigger: Path) -> EdgeSettings:
    base = edge_settings(tmp_path, "s001", hub.url, hub.store_keys["s001"], env.broker.port)
    mqtt = MqttSettings(
        port=env.broker.port, client_id=f"edge-{uuid.uuid4().hex[:8]}",
        username="_storeside-edge", password_file=services / "_storeside-edge.password",
        tls_ca_file=env.broker.ca_file, members_changed_file=trigger,
    )
    rules = RulesConfig(quiet_hours=(0, 0), app_offer_min_relevance=0.0)
    return base.model_copy(update={"mqtt": mqtt, "rules": rules})


def _passwd(args: list[str]) -> dict[str, Any]:
    """What storeside-mqtt-passwd.service runs (as root, with the same arguments)."""
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert mqtt_cli(["mqtt-passwd", *args]) == 0
    return dict(json.loads(printed.getvalue()))


def test_first_time_visitor_logs_in_within_seconds(tmp_path: Path) -> None:
    ana, ben = member(ANA["loyalty_number"]), member(BEN["loyalty_number"])
    seed = tmp_path / "mqtt.seed"
    seed.write_bytes(SEED + b"\n")
    secret_file, services, trigger = (tmp_path / "secret", tmp_path / "mqtt",
                                      tmp_path / "mqtt-members.changed")
    secret_file.write_bytes(store_secret(SEED, "s001") + b"\n")  # install.sh --mqtt-secret-file
    env, other = store_broker_env([]), store_broker_env([])
    services.mkdir()
    for user, password in env.services.items():
        (services / f"{user}.password").write_text(password + "\n")
    topics = Topics(CHAIN, "s001")
    settings = hub_settings(tmp_path, chain=CHAIN, mqtt={"seed_file": seed})
    with EmbeddedHub(tmp_path, stores=("s001", "s002"), settings=settings) as hub, \
            env.broker, other.broker:
        import_members(hub.admin(), [ANA, BEN])
        list_products(hub.admin(), "s001", shelf(6, stock=20, price=lambda i: 1.0 + i))
        edge_cfg = _edge(tmp_path, hub, env, services, trigger)
        passwd_args = ["--secret-file", str(secret_file), "--services-dir", str(services),
                       "--db", str(edge_cfg.db_path), "--out", str(env.broker.conf_dir / "passwd"),
                       "--trigger-file", str(trigger),
                       *(["--group", "mosquitto"] if broker_group() else [])]
        with EmbeddedEdge(edge_cfg) as edge:
            store = edge.runtime.store
            wait_until(lambda: store.get_profile(ana) is not None, 15)
            wait_until(lambda: edge.runtime.service.verifier.key_ids, 10)
            wait_until(lambda: _stamp(trigger), 5)  # Ana was new to this edge
            assert _passwd(passwd_args)["apps"] == 1
            env.broker.reload()
            staff = AclClient("127.0.0.1", env.broker.port, env.ca_file, "_storeside-staff",
                              env.services["_storeside-staff"])
            assert staff.connect() == "Success"
            staff.subscribe(topics.staff_recommendations)

            # a member the edge holds: the token re-sends her row, the trigger stays still
            before, applied = _stamp(trigger), _applied(edge_cfg.db_path)
            assert _issue(hub, ana, "s001").get("mqtt")
            wait_until(lambda: _applied(edge_cfg.db_path) > applied, 10)
            assert _stamp(trigger) == before

            # Ben, never at s001: nowhere here yet
            assert store.get_profile(ben) is None
            t0 = time.monotonic()
            answer = _issue(hub, ben, "s001")
            login = answer["mqtt"]
            assert login["username"] == ben
            assert _login(env, ben, login["password"])[0] == "Not authorized"
            wait_until(lambda: _stamp(trigger) != before, 10, interval=0.01)
            t_trigger = time.monotonic()
            assert store.get_profile(ben) is not None
            summary = _passwd(passwd_args)  # the path unit's service
            assert (summary["apps"], summary["changed"]) == (2, True)
            env.broker.reload()
            app = wait_until(lambda: _login(env, ben, login["password"])[1], 10, interval=0.01)
            t_login = time.monotonic()
            try:
                app.subscribe(topics.app_offers(ben))
                payload = {"v": 1, "event_id": uuid.uuid4().hex, "ts": time.time(),
                           "token": answer["token"]}
                assert app.publish(topics.checkin(ben), json.dumps(payload).encode()) == "Success"
                card = staff.wait(lambda: next(
                    (json.loads(p) for t, p in staff.messages
                     if json.loads(p).get("trigger_event_id") == payload["event_id"]), None),
                    timeout=10)
                assert card["subject"] == ben and card["suggestions"]
            finally:
                app.close()
                staff.close()
            print(json.dumps({"token_to_trigger_s": round(t_trigger - t0, 3),
                              "trigger_to_login_s": round(t_login - t_trigger, 3),
                              "token_to_login_s": round(t_login - t0, 3)}))
            assert t_login - t0 < 10

        # another store's broker (its secret derived for s002) knows Ben: refuses the s001
        # login, takes the one the hub hands out for s002
        other.secret, other.subjects = store_secret(SEED, "s002"), [ben]
        other.rewrite_passwd()
        other.broker.reload()
        at_s002 = _issue(hub, ben, "s002")["mqtt"]
        assert at_s002["password"] != login["password"]
        outcome, client = wait_until(lambda: (r := _login(other, ben, at_s002["password"]))[1]
                                     and r, 10)
        client.close()
        assert outcome == "Success"
        assert _login(other, ben, login["password"])[0] == "Not authorized"


def _issue(hub: EmbeddedHub, subject: str, store: str) -> dict[str, Any]:
    answer = hub.app_backend().post("/v1/tokens/checkin",
                                    json={"subject": subject, "store": store})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _applied(db: Path) -> int:
    rows = db_rows(db, "SELECT items_applied FROM sync_feeds WHERE feed = 'profiles'")
    return int(rows[0][0]) if rows else 0
