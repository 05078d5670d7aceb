"""The shipped store broker (deploy/mosquitto: TLS, passwords, ACL) proves its matrix.

Mosquitto runs with exactly the shipped store.conf (rendered by the installer's own
function) and store.acl, certificates made at test time by edge.store_certs and a
password file by edge.mqtt_passwords. Real paho clients over TLS, verifying the broker
against the store CA (127.0.0.1 is in the certificate's SANs).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.acl_check import (
    APP_A,
    APP_B,
    EXPECTED,
    PRINCIPALS,
    AclClient,
    probe_matrix,
    render_markdown,
)
from edge.broker_config import DEPLOY_DIR, StoreBrokerEnv, store_broker_env
from edge.store_certs import build_store_certs, write_store_certs
from edge.topics import Topics

TOPICS = Topics("acme", "s042")


@pytest.fixture()
def store_broker() -> Iterator[StoreBrokerEnv]:
    env = store_broker_env([APP_A, APP_B])
    with env.broker:
        yield env


def test_shipped_files_are_what_runs(store_broker: StoreBrokerEnv) -> None:
    conf = store_broker.broker.conf_dir
    assert (conf / "store.acl").read_bytes() == (DEPLOY_DIR / "store.acl").read_bytes()
    template = (DEPLOY_DIR / "store.conf").read_text().splitlines()
    rendered = (conf / "store.conf").read_text().splitlines()
    assert len(template) == len(rendered)
    differing = [t for t, r in zip(template, rendered, strict=True) if t != r]
    assert all("@" in line for line in differing)  # only the placeholder lines differ
    assert "allow_anonymous false" in rendered and "tls_version tlsv1.2" in rendered


def test_acl_matrix(store_broker: StoreBrokerEnv, capsys: pytest.CaptureFixture[str]) -> None:
    observed = probe_matrix(
        "127.0.0.1", store_broker.broker.port, store_broker.ca_file,
        store_broker.passwords(), TOPICS,
    )
    with capsys.disabled():
        print("\n" + render_markdown(observed.as_expected()))
    assert observed.as_expected() == EXPECTED
    assert observed.undelivered == []
    # Mosquitto 2.0.11 grants every SUBSCRIBE and filters at delivery (see edge.acl_check)
    assert observed.subacks == {"Granted QoS 1"}
    denied = {key for key, rc in observed.puback.items() if rc != "Success"}
    assert {rc for key, rc in observed.puback.items() if key in denied} == {"Not authorized"}
    assert len(denied) == len(PRINCIPALS) * len(EXPECTED) - sum(
        len(w) for w, _ in EXPECTED.values()
    )


@pytest.mark.parametrize("who", ["anonymous", "wrong password", "unknown user",
                                 "service name as app", "plain TCP", "other CA"])
def test_refused_connections(store_broker: StoreBrokerEnv, who: str,
                             tmp_path: Path) -> None:
    port, ca = store_broker.broker.port, store_broker.ca_file
    user, password, tls = APP_A, store_broker.password(APP_A), True
    if who == "anonymous":
        user = password = None
    elif who == "wrong password":
        password = store_broker.password(APP_B)
    elif who == "unknown user":
        user = "app-c-0003"
    elif who == "service name as app":  # an app's derived password for a service's name
        user = "_storeside-edge"
    elif who == "plain TCP":
        tls = False
    elif who == "other CA":
        certs = build_store_certs("evil", hostnames=[], ips=[])
        write_store_certs(certs, tmp_path)
        ca = str(tmp_path / "ca.crt")
    client = AclClient("127.0.0.1", port, ca, user, password, tls=tls)
    try:
        result = client.connect()
    finally:
        client.close()
    if who in ("plain TCP", "other CA"):
        assert result.startswith("no CONNACK")
    else:
        assert result == "Not authorized"


def test_wildcards_never_widen_a_grant(store_broker: StoreBrokerEnv) -> None:
    """App A subscribed to '#' and to every store's offers gets its own offers and the
    status, never B's offers, cards or events; the SUBACK itself is granted."""
    clients = {u: AclClient("127.0.0.1", store_broker.broker.port, store_broker.ca_file, u,
                            store_broker.password(u)) for u in (APP_A, "_storeside-edge")}
    try:
        for client in clients.values():
            assert client.connect() == "Success"
        app, edge = clients[APP_A], clients["_storeside-edge"]
        assert app.subscribe("#", "storeside/+/+/app/+/offers", "$SYS/#") == ["Granted QoS 1"] * 3
        sent = {}
        for topic in (TOPICS.app_offers(APP_B), TOPICS.staff_recommendations,
                      TOPICS.dead_letters, TOPICS.app_offers(APP_A), TOPICS.status):
            sent[topic] = uuid.uuid4().bytes
            assert edge.publish(topic, sent[topic]) == "Success"
        app.sync()
        assert {t for t, _ in app.messages} == {TOPICS.app_offers(APP_A), TOPICS.status}
    finally:
        for client in clients.values():
            client.close()
