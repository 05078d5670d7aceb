"""Tablet token rotation and the edge's rate limits on a real edge (uvicorn, Mosquitto,
SQLite): check-ins per address (HTTP) and per member (MQTT and HTTP), bad tokens per
address, and the unit behaviour of the shared token bucket with an injected clock."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devtools import EmbeddedEdge, MqttProbe, wait_until
from edge.settings import AuthSettings, RateLimitSettings
from models.ratelimit import RateLimiter
from tests.auth_env import bearer
from tests.edge_env import EdgeEnv, make_env, new_id

GRACE_S = 1.0


@pytest.fixture()
def env(tmp_path, tafeng_zip, broker: PrivateBroker) -> EdgeEnv:
    return make_env(
        tmp_path, tafeng_zip, broker.port, n_products=80, n_members=8,
        auth=AuthSettings(device_rotation_grace_s=GRACE_S),
        rate_limits=RateLimitSettings(exempt_loopback=False, checkin_per_min=6,
                                      checkin_burst=3, subject_checkins_per_min=3,
                                      auth_failures_per_min=4),
    )


@pytest.fixture()
def edge(env: EdgeEnv) -> Iterator[EmbeddedEdge]:
    with EmbeddedEdge(env.settings) as running:
        yield running


def metric(edge: EmbeddedEdge, sample: str) -> float:
    """One sample of /metrics (open on loopback, the default), 0 when absent."""
    for line in httpx.get(f"{edge.url}/metrics").text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == sample:
            return float(value)
    return 0.0


def visits(edge: EmbeddedEdge, token: str) -> int:
    return httpx.get(f"{edge.url}/v1/visits", headers=bearer(token)).status_code


def test_a_tablet_rotates_its_token_and_the_old_one_ends_after_the_grace(edge, env) -> None:
    old = env.tablet_token
    answer = httpx.post(f"{edge.url}/v1/devices/rotate", headers=bearer(old))
    assert answer.status_code == 200
    body = answer.json()
    new = body["token"]
    assert new.startswith("sst_") and new != old and body["old_token_valid_s"] == GRACE_S
    assert visits(edge, new) == 200 and visits(edge, old) == 200  # in flight / other tabs
    # a superseded token may still read during its grace, never mint a successor
    again = httpx.post(f"{edge.url}/v1/devices/rotate", headers=bearer(old))
    assert again.status_code == 409 and again.json()["detail"]["reason"] == "not_current_token"
    wait_until(lambda: visits(edge, old) == 401, timeout=GRACE_S + 3)
    assert visits(edge, new) == 200
    devices = httpx.get(f"{edge.url}/v1/devices",  # admin route: loopback is not enough
                        timeout=5)
    assert devices.status_code == 401


def test_a_browser_gets_the_new_token_in_its_cookie_only(edge, env) -> None:
    cookie = env.settings.tablet.cookie_name
    with httpx.Client(base_url=edge.url) as browser:
        browser.cookies.set(cookie, env.tablet_token, domain="127.0.0.1")
        answer = browser.post("/v1/devices/rotate")
        assert answer.status_code == 200 and "token" not in answer.json()
        set_cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "samesite=strict" in set_cookie.lower()
        assert browser.cookies[cookie] != env.tablet_token
        assert browser.get("/v1/visits").status_code == 200
    wait_until(lambda: visits(edge, env.tablet_token) == 401, timeout=GRACE_S + 3)


def test_http_checkins_are_limited_per_address(edge, env) -> None:
    answers = [httpx.post(f"{edge.url}/v1/checkin", content=b"[]") for _ in range(5)]
    assert [a.status_code for a in answers] == [422, 422, 422, 429, 429]
    assert answers[3].json()["detail"]["reason"] == "rate_limited"
    assert int(answers[3].headers["retry-after"]) >= 1
    assert metric(edge, 'storeside_rate_limited_total{endpoint="checkin"}') == 2
    # the tablet's QR check-in has its own bucket
    qr = httpx.post(f"{edge.url}/v1/checkin/qr", content=b"x", headers=env.tablet)
    assert qr.status_code != 429


def test_checkins_of_one_member_are_limited_over_mqtt_and_http(edge, env, broker) -> None:
    subject = env.seed.subjects[0]
    with MqttProbe(broker.host, broker.port, [f"{env.topics.prefix}/staff/recommendations"]
                   ) as probe:
        for _ in range(4):  # burst 3, then a dead letter
            probe.publish(env.topics.checkin(subject), env.checkin_payload(subject))
        wait_until(lambda: metric(
            edge, 'storeside_dead_letters_total{kind="checkin",reason="rate_limited"}') == 1,
            timeout=10)
    assert metric(edge, 'storeside_rate_limited_total{endpoint="subject_checkin"}') == 1
    other = env.seed.subjects[1]
    kiosk = httpx.post(f"{edge.url}/v1/checkin", json=env.checkin_payload(other), timeout=10)
    assert kiosk.status_code == 200
    over = httpx.post(f"{edge.url}/v1/checkin", json=env.checkin_payload(subject), timeout=10)
    assert over.status_code == 429 and over.json()["detail"]["reason"] == "rate_limited"


def test_bad_tokens_are_limited_per_address_then_even_a_good_one_waits(edge, env) -> None:
    for _ in range(4):
        assert visits(edge, "sst_guess-" + new_id()) == 401
    blocked = httpx.get(f"{edge.url}/v1/visits", headers=env.tablet)
    assert blocked.status_code == 429
    assert blocked.json()["detail"]["reason"] == "too_many_bad_tokens"
    assert "retry-after" in blocked.headers
    assert metric(edge, 'storeside_rate_limited_total{endpoint="auth"}') == 1
    assert metric(edge, 'storeside_auth_refused_total{reason="bad_token"}') == 4


def test_token_bucket_refills_at_its_rate_and_wait_does_not_spend() -> None:
    now = [0.0]
    limiter = RateLimiter(6, burst=2, clock=lambda: now[0])  # one per 10 s
    assert limiter.wait("a") == 0.0
    assert limiter.take("a") == 0.0 and limiter.take("a") == 0.0
    assert limiter.wait("a") == pytest.approx(10.0)
    assert limiter.wait("a") == pytest.approx(10.0)  # peeking spends nothing
    assert limiter.take("a") == pytest.approx(10.0)
    now[0] = 9.0
    assert limiter.take("a") == pytest.approx(1.0)
    now[0] = 10.0
    assert limiter.take("a") == 0.0
    assert limiter.take("b") == 0.0  # per key
