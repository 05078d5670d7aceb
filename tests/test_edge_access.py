"""Every edge route against the access table (edge.access), with every kind of caller, on a
real edge (uvicorn, Mosquitto, SQLite); admin / till tokens and their live rotation."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from edge.access import ROUTES, rule_for
from edge.api_keys import create_api_key, list_api_keys, revoke_api_key
from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, wait_until
from edge.settings import AuthSettings, RateLimitSettings
from tests.auth_env import api_routes, bearer, denied, edge_token
from tests.edge_env import EdgeEnv, make_env

PATH_VALUES = {"visit_id": "nope", "device_id": "tab-00000000", "name": "icon.svg"}


@pytest.fixture()
def env(tmp_path, tafeng_zip, broker: PrivateBroker) -> EdgeEnv:
    return make_env(
        tmp_path, tafeng_zip, broker.port, n_products=80, n_members=8,
        auth=AuthSettings(open_on_loopback=False),
        rate_limits=RateLimitSettings(exempt_loopback=False, auth_failures_per_min=10_000),
    )


@pytest.fixture()
def edge(env: EdgeEnv) -> Iterator[EmbeddedEdge]:
    with EmbeddedEdge(env.settings) as running:
        yield running


def routes(edge: EmbeddedEdge) -> list[tuple[str, str]]:
    return api_routes(edge.app)


def call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    url = path.format(**PATH_VALUES)
    body = {"content": b"{}", "headers": {**headers, "Content-Type": "application/json"}}
    with client.stream(method, url, **(body if method == "POST" else {"headers": headers})) as r:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return r  # the live feed never ends: its status is the answer
        r.read()
        return r


def test_every_route_is_in_the_table_and_the_table_has_no_stale_route(edge) -> None:
    served = routes(edge)
    assert sorted(ROUTES) == served
    assert all(rule_for(m, p) is not None for m, p in served)


def test_every_route_admits_exactly_the_callers_its_rule_names(edge, env) -> None:
    db = env.settings.db_path
    callers = {
        "device": env.tablet,
        "admin": bearer(edge_token(db, "admin")),
        "till": bearer(edge_token(db, "till")),
    }
    checked = 0
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        # rotating is last: the tablet's token is superseded by it (still valid for a grace)
        for method, path in sorted(routes(edge), key=lambda mp: mp[1] == "/v1/devices/rotate"):
            rule = ROUTES[(method, path)]
            anonymous = call(client, method, path, {})
            bad = call(client, method, path, bearer("ssk_not-a-token"))
            if rule.public:
                assert not denied(anonymous) and not denied(bad), (method, path)
            else:
                assert anonymous.status_code == 401 and denied(anonymous), (method, path)
                assert bad.status_code == 401 and denied(bad), (method, path)
            for kind, headers in callers.items():
                answer = call(client, method, path, headers)
                allowed = rule.public or kind in rule.roles
                assert denied(answer) != allowed, (method, path, kind, answer.status_code)
                if not allowed:
                    assert answer.status_code == 403, (method, path, kind)
                checked += 1
    assert checked == 3 * len(ROUTES)


def test_loopback_is_open_for_ops_reads_only_when_configured(tmp_path, tafeng_zip,
                                                              broker) -> None:
    env = make_env(tmp_path, tafeng_zip, broker.port, n_products=80, n_members=8)
    assert env.settings.auth.open_on_loopback  # the default: the store device scrapes itself
    with EmbeddedEdge(env.settings) as edge:
        assert httpx.get(f"{edge.url}/metrics").status_code == 200
        assert "mqtt_connected" in httpx.get(f"{edge.url}/readyz").json()
        # relayed by a proxy on the device: not the device itself
        proxied = httpx.get(f"{edge.url}/metrics", headers={"X-Forwarded-For": "10.0.0.9"})
        assert proxied.status_code == 401
        assert httpx.get(f"{edge.url}/readyz", headers={"Forwarded": "for=10.0.0.9"}).json() \
            == {"ready": True}
        # device management never rides on loopback
        assert httpx.get(f"{edge.url}/v1/devices").status_code == 401


def test_readyz_shows_details_to_an_admin_only(edge, env) -> None:
    anonymous = httpx.get(f"{edge.url}/readyz")
    assert anonymous.status_code == 200 and anonymous.json() == {"ready": True}
    admin = bearer(edge_token(env.settings.db_path, "admin"))
    detailed = httpx.get(f"{edge.url}/readyz", headers=admin).json()
    assert detailed["ready"] is True and detailed["mqtt_connected"] is True
    till = bearer(edge_token(env.settings.db_path, "till"))
    assert httpx.get(f"{edge.url}/readyz", headers=till).json() == {"ready": True}


def test_an_admin_token_is_replaced_live_without_a_failed_scrape(edge, env) -> None:
    """New token, switch the scraper, revoke the old one (from the CLI's code path, another
    connection): no scrape fails, the old token is refused within the cache time."""
    db = env.settings.db_path
    old = edge_token(db, "admin", "prometheus")
    current = [old]
    failures: list[int] = []
    scrapes = [0]
    stop = threading.Event()

    def scraper() -> None:
        with httpx.Client(base_url=edge.url, timeout=10) as client:
            while not stop.is_set():
                status = client.get("/metrics", headers=bearer(current[0])).status_code
                scrapes[0] += 1
                if status != 200:
                    failures.append(status)

    thread = threading.Thread(target=scraper, daemon=True)
    thread.start()
    try:
        wait_until(lambda: scrapes[0] >= 20, timeout=10)
        new = edge_token(db, "admin", "prometheus-2")
        current[0] = new
        # the operator checks the old token is no longer used, then revokes it
        before = scrapes[0]
        wait_until(lambda: scrapes[0] >= before + 20, timeout=10)
        revoked = revoke_api_key(db, "prometheus")
        assert [k.label for k in revoked] == ["prometheus"]
        wait_until(lambda: httpx.get(f"{edge.url}/metrics",
                                     headers=bearer(old)).status_code == 401, timeout=2)
        before = scrapes[0]
        wait_until(lambda: scrapes[0] >= before + 20, timeout=10)
    finally:
        stop.set()
        thread.join(10)
    assert failures == [] and scrapes[0] >= 60
    states = {k.label: k.revoked_at is None for k in list_api_keys(db)}
    assert states == {"prometheus": False, "prometheus-2": True}
    last_used = {k.label: k.last_used_at for k in list_api_keys(db)}
    assert last_used["prometheus"] is not None and last_used["prometheus-2"] is not None


def test_expired_and_revoked_tokens_and_roles(edge, env) -> None:
    db = env.settings.db_path
    import time

    _, expired = create_api_key(db, "old", "admin", expires_in_s=60, now=time.time() - 120)
    answer = httpx.get(f"{edge.url}/v1/status", headers=bearer(expired))
    assert answer.status_code == 401 and answer.json()["detail"]["reason"] == "bad_token"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    till = bearer(edge_token(db, "till"))
    assert httpx.post(f"{edge.url}/v1/pos", content=b"[]", headers=till).status_code == 422
    refused = httpx.get(f"{edge.url}/metrics", headers=till)
    assert refused.status_code == 403
    assert refused.json()["detail"] == {"reason": "forbidden", "role": "till", "needs": ["admin"]}
    admin = bearer(edge_token(db, "admin"))
    assert httpx.get(f"{edge.url}/v1/visits", headers=admin).status_code == 403
    # an API key is never taken from the tablet cookie
    with httpx.Client(base_url=edge.url) as browser:
        browser.cookies.set(env.settings.tablet.cookie_name, admin["Authorization"][7:])
        assert browser.get("/v1/visits").status_code == 401


def test_openapi_declares_the_security_schemes(edge) -> None:
    spec: dict[str, Any] = httpx.get(f"{edge.url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer",
                                 "description": schemes["bearer"]["description"]}
    assert schemes["tablet_cookie"]["in"] == "cookie"
    assert {"bearer": []} in spec["paths"]["/metrics"]["get"]["security"]
