"""The real edge on the shipped store broker: TLS, its own credentials, the ACL.

An app checks in over TLS with its derived password; the staff gateway gets the card;
the app's offer reaches that app only. Then the app secret rotates without a broker
restart (new password file + SIGHUP): old app passwords are refused, new ones work, and
the edge, whose password did not change, stays connected throughout.
"""

from __future__ import annotations

import contextlib
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.acl_check import AclClient
from edge.broker_config import StoreBrokerEnv, broker_group, store_broker_env
from edge.devtools import EmbeddedEdge, wait_until
from edge.mqtt_cli import main as mqtt_cli
from edge.mqtt_passwords import app_password
from edge.rules import RulesConfig
from edge.settings import MqttSettings
from tests.edge_env import EdgeEnv, make_env, new_id

NO_QUIET_HOURS = RulesConfig(quiet_hours=(0, 0), app_offer_min_relevance=0.0)


@dataclass
class TlsStore:
    broker: StoreBrokerEnv
    env: EdgeEnv
    secret_file: Path
    services_dir: Path

    def client(self, user: str, password: str | None = None) -> AclClient:
        client = AclClient("127.0.0.1", self.broker.broker.port, self.broker.ca_file, user,
                           password or self.password(user))
        assert client.connect() == "Success"
        return client

    def password(self, user: str) -> str:
        if user.startswith("_"):
            return (self.services_dir / f"{user}.password").read_text().strip()
        return app_password(self.secret_file.read_bytes().strip(), user)

    def build_passwd(self) -> dict[str, object]:
        """What an operator (or the refresh timer) runs: storeside-edge mqtt-passwd."""
        out = self.broker.broker.conf_dir / "passwd"
        args = ["mqtt-passwd", "--secret-file", str(self.secret_file), "--services-dir",
                str(self.services_dir), "--db", str(self.env.settings.db_path), "--out",
                str(out), *(["--group", "mosquitto"] if broker_group() else [])]
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            assert mqtt_cli(args) == 0
        return dict(json.loads(printed.getvalue()))


@pytest.fixture()
def store(tmp_path: Path, tafeng_zip: Path) -> Iterator[TlsStore]:
    broker = store_broker_env([])
    secret_file, services = tmp_path / "mqtt-secret", tmp_path / "mqtt"
    secret_file.write_text(secrets.token_urlsafe(32))
    services.mkdir()
    for user, password in broker.services.items():
        (services / f"{user}.password").write_text(password + "\n")
    mqtt = MqttSettings(
        port=broker.broker.port, client_id=f"edge-{new_id()[:8]}",
        username="_storeside-edge", password_file=services / "_storeside-edge.password",
        tls_ca_file=broker.broker.ca_file,
    )
    env = make_env(tmp_path, tafeng_zip, broker.broker.port, n_members=12,
                   rules=NO_QUIET_HOURS, mqtt=mqtt)
    holder = TlsStore(broker, env, secret_file, services)
    summary = holder.build_passwd()
    assert summary == {"services": sorted(broker.services), "apps": 12, "changed": True}
    with broker.broker, EmbeddedEdge(env.settings):
        yield holder


def connected_as(store: TlsStore, user: str, password: str) -> AclClient | None:
    client = AclClient("127.0.0.1", store.broker.broker.port, store.broker.ca_file, user,
                       password)
    if client.connect() == "Success":
        return client
    client.close()
    return None


def check_in(store: TlsStore, app: AclClient, subject: str, staff: AclClient) -> dict:
    payload = store.env.checkin_payload(subject)
    assert app.publish(store.env.topics.checkin(subject), json.dumps(payload).encode()) == "Success"
    return staff.wait(lambda: next(
        (json.loads(p) for t, p in staff.messages
         if t == store.env.topics.staff_recommendations
         and json.loads(p)["trigger_event_id"] == payload["event_id"]), None), timeout=10)


def test_checkin_over_tls_reaches_staff_and_only_that_app(store: TlsStore) -> None:
    topics = store.env.topics
    a, b = store.env.seed.subjects[0], store.env.seed.subjects[1]
    staff = store.client("_storeside-staff")
    app_a, app_b = store.client(a), store.client(b)
    try:
        staff.subscribe(topics.staff_recommendations, topics.status)
        app_a.subscribe(topics.app_offers(a))
        app_b.subscribe("#")  # tries to read everything
        card = check_in(store, app_a, a, staff)
        assert card["subject"] == a and card["suggestions"]
        offer = app_a.wait(lambda: [p for t, p in app_a.messages if t == topics.app_offers(a)])
        assert json.loads(offer[0])["product_id"]
        app_b.sync()
        assert {t for t, _ in app_b.messages} <= {topics.status}  # no card, no offer of A
        # A cannot check in as B (the ACL), B's events stay B's
        assert app_a.publish(topics.checkin(b), b"{}") == "Not authorized"
    finally:
        for client in (staff, app_a, app_b):
            client.close()


def test_rotation_without_restart(store: TlsStore) -> None:
    topics = store.env.topics
    a = store.env.seed.subjects[2]
    old_password = store.password(a)
    staff = store.client("_storeside-staff")
    try:
        staff.subscribe(topics.staff_recommendations, topics.status)
        staff.wait(lambda: [p for t, p in staff.messages if t == topics.status])
        statuses = len([1 for t, _ in staff.messages if t == topics.status])
        # rotate the store's app secret: a new password file, then SIGHUP
        store.secret_file.write_text(secrets.token_urlsafe(32))
        assert store.build_passwd()["changed"] is True
        assert store.build_passwd()["changed"] is False  # same inputs, same file
        store.broker.broker.reload()
        # the new password works once the broker has handled the signal
        new_app = wait_until(lambda: connected_as(store, a, store.password(a)), timeout=10)
        stale = AclClient("127.0.0.1", store.broker.broker.port, store.broker.ca_file, a,
                          old_password)
        assert stale.connect() == "Not authorized"
        stale.close()
        card = check_in(store, new_app, a, staff)
        assert card["subject"] == a
        new_app.close()
        staff.sync()
        # the edge (unchanged password) and the staff gateway kept their connections:
        # no second "online" status (the edge publishes one on every connect)
        assert len([1 for t, _ in staff.messages if t == topics.status]) == statuses
        assert staff.client.is_connected()
    finally:
        staff.close()


def test_the_edge_follows_its_own_rotated_password(store: TlsStore) -> None:
    """The edge's password rotates like an app's: new password file for the broker, new
    password file for the edge, SIGHUP. The broker drops the edge's session (its password
    is no longer valid); the edge reads its password file again before reconnecting."""
    topics = store.env.topics
    staff = store.client("_storeside-staff")
    try:
        staff.subscribe(topics.staff_recommendations, topics.status)
        staff.wait(lambda: [p for t, p in staff.messages if t == topics.status])
        before = len([1 for t, _ in staff.messages if t == topics.status])
        (store.services_dir / "_storeside-edge.password").write_text(
            secrets.token_urlsafe(24) + "\n")
        assert store.build_passwd()["changed"] is True
        store.broker.broker.reload()
        # reconnected with the new password: it says "online" again on the new session
        staff.wait(lambda: [
            p for t, p in staff.messages[before:]
            if t == topics.status and json.loads(p)["state"] == "online"
        ] or None, timeout=15)
        a = store.env.seed.subjects[3]
        app = store.client(a)
        try:
            assert check_in(store, app, a, staff)["subject"] == a
        finally:
            app.close()
    finally:
        staff.close()
