"""Redeeming pairing codes over HTTP on a real edge (uvicorn, Mosquitto, SQLite): the
browser link, the API, expiry by the edge's clock, concurrent redeems, attempt limits."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.broker import PrivateBroker
from edge.devices import create_pairing_code, list_devices
from edge.devtools import EmbeddedEdge
from edge.pairing_codes import format_code, new_code
from edge.settings import TabletSettings
from tests.edge_env import EdgeEnv, make_env

ATTEMPTS_PER_MIN = 6


class Clock:
    """The edge's wall clock, movable by the test (codes expire by it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture()
def env(tmp_path: Path, tafeng_zip: Path, broker: PrivateBroker) -> EdgeEnv:
    return make_env(tmp_path, tafeng_zip, broker.port, n_products=60, n_members=6,
                    tablet=TabletSettings(pairing_attempts_per_min=ATTEMPTS_PER_MIN))


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def edge(env: EdgeEnv, clock: Clock) -> Iterator[EmbeddedEdge]:
    with EmbeddedEdge(env.settings, clock=clock) as running:
        yield running


def code_for(env: EdgeEnv, label: str = "Tablet 1", ttl_s: float = 600) -> str:
    return create_pairing_code(env.settings.db_path, label, ttl_s)


def reason(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["detail"]["reason"]


def page_reason(response: httpx.Response) -> tuple[int, str]:
    found = re.search(r'data-reason="([a-z_]*)"', response.text)
    return response.status_code, found.group(1) if found else ""


def test_the_link_sets_a_new_device_token_in_a_strict_cookie_once(edge, env) -> None:
    code = code_for(env)
    cookie_name = env.settings.tablet.cookie_name
    with httpx.Client(base_url=edge.url) as browser:
        answer = browser.get("/tablet/pair", params={"code": code})
        assert answer.status_code == 303 and answer.headers["location"] == "/tablet"
        set_cookie = answer.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age="):
            assert attribute.lower() in set_cookie.lower(), attribute
        token = browser.cookies[cookie_name]
        assert token.startswith("sst_") and code not in token
        page = browser.get("/tablet")
        assert page.status_code == 200 and 'id="cards"' in page.text
        assert browser.get("/v1/visits").json() == {"visits": []}
        again = browser.get("/tablet/pair", params={"code": code})
        assert page_reason(again) == (410, "code_used")
        assert "already used" in again.text
    (device,) = [d for d in list_devices(env.settings.db_path) if d.label == "Tablet 1"]
    assert device.last_seen_at is not None
    # a fresh browser with the used link gets nothing
    with httpx.Client(base_url=edge.url) as other:
        refused = other.get("/tablet/pair", params={"code": format_code(code)})
        assert page_reason(refused) == (410, "code_used") and cookie_name not in other.cookies
        assert other.get("/tablet").status_code == 401


def test_the_pairing_page_and_refusals_in_the_browser(edge, env) -> None:
    unpaired = httpx.get(f"{edge.url}/tablet")
    assert page_reason(unpaired) == (401, "unpaired") and "Pair this tablet" in unpaired.text
    assert 'action="/tablet/pair"' in unpaired.text and 'name="code"' in unpaired.text
    form = httpx.get(f"{edge.url}/tablet/pair")
    assert form.status_code == 200 and 'name="code"' in form.text
    unknown = httpx.get(f"{edge.url}/tablet/pair", params={"code": new_code()})
    assert page_reason(unknown) == (401, "unknown_code") and "not valid" in unknown.text
    typo = httpx.get(f"{edge.url}/tablet/pair", params={"code": "<b>K7QM-4XP0"})
    assert page_reason(typo) == (422, "malformed_code")
    assert 'value="&lt;b&gt;K7QM-4XP0"' in typo.text  # shown back, escaped, to fix it
    # the old kind of link, with a device token in it, pairs nothing any more
    old = httpx.get(f"{edge.url}/tablet", params={"pair": env.tablet_token})
    assert page_reason(old) == (410, "old_pairing_link") and "set-cookie" not in old.headers


def test_the_api_returns_a_token_for_clients_without_a_browser(edge, env) -> None:
    code = code_for(env, "Kiosk")
    url = f"{edge.url}/v1/devices/pair"
    answer = httpx.post(url, json={"code": format_code(code), "label": "Kiosk 2"})
    assert answer.status_code == 201, answer.text
    paired = answer.json()
    assert set(paired) == {"device_id", "label", "token"} and paired["label"] == "Kiosk 2"
    bearer = {"Authorization": f"Bearer {paired['token']}"}
    assert httpx.get(f"{edge.url}/v1/visits", headers=bearer).status_code == 200
    assert reason(httpx.post(url, json={"code": code})) == (410, "code_used")
    assert reason(httpx.post(url, json={"code": new_code()})) == (401, "unknown_code")
    assert reason(httpx.post(url, json={"code": "nope"})) == (422, "malformed_code")
    assert reason(httpx.post(url, content=b"{not json")) == (422, "bad_json")
    assert reason(httpx.post(url, json={"code": 12345678})) == (422, "bad_request")
    assert reason(httpx.post(url, json=["code"])) == (422, "bad_request")
    assert reason(httpx.post(url, json={"code": code, "role": "admin"})) == (422, "bad_request")
    assert reason(httpx.post(url, content=b"x" * 5000)) == (413, "too_large")
    other = code_for(env)
    assert reason(httpx.post(url, json={"code": other, "label": "\n"})) == (422, "bad_label")


def test_a_code_expires_by_the_edge_clock(edge, env, clock) -> None:
    code = code_for(env, ttl_s=60)
    clock.offset = 61.0
    url = f"{edge.url}/v1/devices/pair"
    assert reason(httpx.post(url, json={"code": code})) == (410, "code_expired")
    page = httpx.get(f"{edge.url}/tablet/pair", params={"code": code})
    assert page_reason(page) == (410, "code_expired") and "expired" in page.text
    clock.offset = 0.0
    fresh = code_for(env, ttl_s=60)
    clock.offset = 59.0
    assert httpx.post(url, json={"code": fresh}).status_code == 201


def test_two_redeems_at_once_pair_exactly_one_device(edge, env) -> None:
    code = code_for(env, "Race")
    start = threading.Barrier(4)
    statuses: list[int] = []

    def redeem() -> None:
        start.wait(5)
        response = httpx.post(f"{edge.url}/v1/devices/pair", json={"code": code}, timeout=10)
        statuses.append(response.status_code)

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert sorted(statuses) == [201, 410, 410, 410]
    assert [d.label for d in list_devices(env.settings.db_path)].count("Race") == 1


def test_attempts_are_limited_per_address_and_counted(edge, env) -> None:
    url = f"{edge.url}/v1/devices/pair"
    guesses = [httpx.post(url, json={"code": new_code()}) for _ in range(ATTEMPTS_PER_MIN)]
    assert {reason(g) for g in guesses} == {(401, "unknown_code")}
    limited = httpx.post(url, json={"code": new_code()})
    assert reason(limited) == (429, "too_many_attempts")
    assert 1 <= int(limited.headers["retry-after"]) <= 60 // ATTEMPTS_PER_MIN
    code = code_for(env)  # even the right code waits: nothing is tried while limited
    assert reason(httpx.post(url, json={"code": code})) == (429, "too_many_attempts")
    page = httpx.get(f"{edge.url}/tablet/pair", params={"code": code})
    assert page_reason(page) == (429, "too_many_attempts") and "retry-after" in page.headers
    # another address (the edge sees 127.0.0.2) has attempts of its own
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=transport) as elsewhere:
        assert elsewhere.post(url, json={"code": code}).status_code == 201
    metrics = httpx.get(f"{edge.url}/metrics").text
    counted = dict(re.findall(r'^storeside_pairing_attempts_total\{outcome="(\w+)"\} (\S+)$',
                              metrics, re.M))
    assert float(counted["unknown_code"]) == ATTEMPTS_PER_MIN
    assert float(counted["rate_limited"]) == 3 and float(counted["paired"]) == 1
