"""Tablet API on a real edge (uvicorn, Mosquitto, SQLite): device auth, QR check-in."""

from __future__ import annotations

import threading
import time

import httpx

from edge.devices import list_devices, revoke_device
from edge.devtools import EmbeddedEdge, wait_until
from hub.tokens import generate_signing_key, private_key_pem
from tests.edge_env import EdgeEnv, edge_fixtures
from tests.qr_images import encode, no_qr_frame, qr_frame

PROTECTED = [
    ("GET", "/v1/visits"),
    ("GET", "/v1/visits/v1/recommendations"),
    ("GET", "/v1/stream"),
    ("POST", "/v1/feedback"),
    ("POST", "/v1/checkin/qr"),
]


env, edge = edge_fixtures(n_products=120, n_members=12)


def qr_post(edge: EmbeddedEdge, env: EdgeEnv, data: bytes, **kwargs) -> httpx.Response:
    headers = {"Content-Type": "image/jpeg", **env.tablet, **kwargs.pop("headers", {})}
    return httpx.post(f"{edge.url}/v1/checkin/qr", content=data, headers=headers,
                      timeout=10, **kwargs)


def test_tablet_endpoints_refuse_requests_without_a_paired_device(edge, env) -> None:
    for method, path in PROTECTED:
        missing = httpx.request(method, f"{edge.url}{path}", timeout=5)
        assert missing.status_code == 401, path
        assert missing.json()["detail"]["reason"] == "no_device_token"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.request(method, f"{edge.url}{path}", timeout=5,
                              headers={"Authorization": "Bearer sst_not-a-paired-tablet"})
        assert wrong.status_code == 401 and wrong.json()["detail"]["reason"] == "bad_device_token"
    for path in ("/healthz", "/readyz", "/metrics", "/v1/status"):
        assert httpx.get(f"{edge.url}{path}", timeout=5).status_code == 200, path
    # the kiosk and the till stay open: they are checked by their payload, not a device
    assert httpx.post(f"{edge.url}/v1/checkin", content=b"[]").status_code == 422
    assert httpx.post(f"{edge.url}/v1/pos", content=b"[]").status_code == 422
    assert httpx.get(f"{edge.url}/v1/visits", headers=env.tablet).status_code == 200


def test_the_device_cookie_opens_the_page_and_the_api(edge, env) -> None:
    """(Pairing itself, which sets the cookie: tests/test_pairing_api.py.)"""
    unpaired = httpx.get(f"{edge.url}/tablet")
    assert unpaired.status_code == 401 and "Pair this tablet" in unpaired.text
    assert "not paired" in unpaired.text
    with httpx.Client(base_url=edge.url) as browser:
        browser.cookies.set(env.settings.tablet.cookie_name, env.tablet_token)
        page = browser.get("/tablet")
        assert page.status_code == 200 and 'id="cards"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert browser.get("/v1/visits").json() == {"visits": []}
    script = httpx.get(f"{edge.url}/tablet/assets/tablet.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{edge.url}/tablet/assets/secrets.txt").status_code == 404
    assert list_devices(env.settings.db_path)[0].last_seen_at is not None


def test_revoked_tablet_loses_the_api_and_its_live_feed_within_a_second(edge, env) -> None:
    connected, ended = threading.Event(), threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{edge.url}/v1/stream", headers=env.tablet,
                          timeout=10) as response:
            for line in response.iter_lines():
                if line.startswith("event: snapshot"):
                    connected.set()
        ended.set()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(5)
    device = list_devices(env.settings.db_path)[0]
    started = time.monotonic()
    revoke_device(env.settings.db_path, device.device_id)  # as the CLI does, another connection
    assert ended.wait(1.0), "the live feed of a revoked tablet stays open"
    wait_until(
        lambda: httpx.get(f"{edge.url}/v1/visits", headers=env.tablet).status_code == 401, 1.0,
        interval=0.02,
    )
    assert time.monotonic() - started <= 1.0
    thread.join(2)


def test_qr_check_in_is_the_kiosk_check_in_and_a_rescan_is_idempotent(edge, env) -> None:
    subject = env.seed.subjects[0]
    frame = encode(qr_frame(env.token(subject)))
    first = qr_post(edge, env, frame)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["duplicate"] is False and answer["visit_id"]
    assert answer["card"]["subject"] == subject and len(answer["card"]["suggestions"]) == 5
    again = qr_post(edge, env, frame)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    visits = httpx.get(f"{edge.url}/v1/visits", headers=env.tablet).json()["visits"]
    assert [v["subject"] for v in visits] == [subject]

    # a form upload (curl -F, a browser form) of a PNG works the same
    other = env.seed.subjects[1]
    png = encode(qr_frame(env.token(other), angle=30, module_px=5), ".png")
    form = httpx.post(f"{edge.url}/v1/checkin/qr", headers=env.tablet, timeout=10,
                      files={"frame": ("frame.png", png, "image/png")})
    assert form.status_code == 200, form.text
    assert form.json()["card"]["subject"] == other


def test_qr_check_in_errors_are_clear_4xx(edge, env) -> None:
    subject = env.seed.subjects[2]

    def reason(response: httpx.Response) -> tuple[int, str]:
        return response.status_code, response.json()["detail"]["reason"]

    assert reason(qr_post(edge, env, encode(no_qr_frame()))) == (422, "no_qr_code")
    assert reason(qr_post(edge, env, b"just some text")) == (415, "not_an_image")
    assert reason(qr_post(edge, env, b"")) == (422, "empty_body")
    too_big = b"\xff\xd8\xff" + b"\0" * (env.settings.tablet.qr_max_bytes + 20_000)
    assert reason(qr_post(edge, env, too_big)) == (413, "too_large")
    url_code = encode(qr_frame("https://example.com/not-a-check-in", module_px=10))
    assert reason(qr_post(edge, env, url_code)) == (422, "not_a_checkin_code")
    forged = env.token(subject, private_pem=private_key_pem(generate_signing_key()))
    assert reason(qr_post(edge, env, encode(qr_frame(forged)))) == (401, "token_bad_signature")
    expired = env.token(subject, now=time.time() - 3600, ttl_s=60)
    assert reason(qr_post(edge, env, encode(qr_frame(expired)))) == (401, "token_expired")
    bad_form = httpx.post(f"{edge.url}/v1/checkin/qr", content=b"--x\r\n", headers={
        **env.tablet, "Content-Type": "multipart/form-data"})
    assert reason(bad_form) == (422, "bad_multipart")
    assert httpx.get(f"{edge.url}/healthz").status_code == 200
