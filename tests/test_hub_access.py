"""Every hub route against the role table (hub.roles) with every role and a store key, on a
real hub (uvicorn, SQLite); API keys (create, expire, revoke), store key rotation with an
overlap, and the hub's rate limits (check-in tokens, bad bearer tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.api_keys import create_api_key, revoke_api_key
from hub.cli import main
from hub.devtools import EmbeddedHub, hub_settings
from hub.roles import ROLES, ROUTES, roles_for
from tests.auth_env import api_routes, bearer, denied, hub_token
from tests.hub_env import Clock, csv_text, member_row, subject, write_config

PATH_VALUES = {"store": "s1", "product_id": "p1", "subject": "m-0000000000000000",
               "offer_id": "o1", "segment_id": "g1", "version": "v1", "erasure_id": "e1",
               "name": "admin.css"}
OVERLAP = 3600.0


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    settings = hub_settings(tmp_path, rate_limits={"auth_failures_per_min": 10_000,
                                                   "checkin_tokens_per_subject_per_min": 3})
    with EmbeddedHub(tmp_path, stores=("s1", "s2"), settings=settings,
                     clock=Clock()) as running:
        yield running


def call(client: httpx.Client, method: str, path: str, headers: dict[str, str],
         store: str = "s1") -> httpx.Response:
    url = path.format(**{**PATH_VALUES, "store": store})
    if method in ("POST", "PUT"):
        return client.request(method, url, content=b"{}",
                              headers={**headers, "Content-Type": "application/json"})
    return client.request(method, url, headers=headers)


def test_every_route_is_in_the_table_and_the_table_has_no_stale_route(hub) -> None:
    served = api_routes(hub.app)
    assert sorted(ROUTES) == served
    assert all(roles_for(m, p) is not None for m, p in served)


def test_every_route_admits_exactly_the_roles_its_entry_names(hub) -> None:
    callers = {role: bearer(hub_token(hub.settings, role)) for role in ROLES}
    callers["store"] = bearer(hub.store_keys["s1"])
    checked = 0
    with httpx.Client(base_url=hub.url, timeout=10) as client:
        # rotating s1's key last: the old one stays valid for the overlap anyway
        for method, path in sorted(api_routes(hub.app), key=lambda mp: "rotate" in mp[1]):
            roles = ROUTES[(method, path)]
            anonymous = call(client, method, path, {})
            bad = call(client, method, path, bearer("shk_not-a-key"))
            if not roles:
                assert not denied(anonymous) and not denied(bad), (method, path)
            else:
                assert anonymous.status_code == 401 and denied(anonymous), (method, path)
                assert bad.status_code == 401 and denied(bad), (method, path)
            for role, headers in callers.items():
                answer = call(client, method, path, headers)
                allowed = not roles or role in roles
                assert denied(answer) != allowed, (method, path, role, answer.status_code)
                if not allowed:
                    assert answer.status_code == 403, (method, path, role)
                checked += 1
            if "{store}" in path and "store" in roles:  # another store's key: never
                other = call(client, method, path, callers["store"], store="s2")
                assert other.status_code == 403 and denied(other), (method, path)
    assert checked == len(callers) * len(ROUTES)


def test_api_keys_expire_and_revoke_at_once(hub) -> None:
    db = hub.context.db
    _, viewer = create_api_key(db, "viewer", "dashboards", expires_in_s=600)
    with hub.client(viewer) as client:
        assert client.get("/v1/offers").status_code == 200
        assert client.put("/v1/offers/o1", json={}).status_code == 403
        assert client.get(f"/v1/members/{subject(1)}/consent").status_code == 403
    hub.context.clock.advance(601)
    expired = hub.client(viewer).get("/v1/offers")
    assert expired.status_code == 401 and expired.json()["detail"]["reason"] == "bad_token"
    _, catalog = create_api_key(db, "catalog", "erp")
    assert hub.client(catalog).get("/v1/offers").status_code == 200
    assert [k.label for k in revoke_api_key(db, "erp")] == ["erp"]
    assert hub.client(catalog).get("/v1/offers").status_code == 401


def test_a_store_key_rotates_with_an_overlap_over_http_and_the_cli(hub, tmp_path,
                                                                     capsys) -> None:
    old = hub.store_keys["s1"]
    rotated = hub.admin().post("/v1/stores/s1/keys/rotate", json={"overlap_s": OVERLAP})
    assert rotated.status_code == 200
    new = rotated.json()["store_key"]
    assert rotated.json()["previous_keys_expire_at"] == hub.context.clock.now + OVERLAP
    for key in (old, new):  # both valid during the overlap
        assert hub.client(key).post("/v1/stores/s1/heartbeat", json={}).status_code == 200
    keys = hub.admin().get("/v1/stores/s1/keys").json()["keys"]
    assert [k["state"] for k in keys] == ["active", "active"]
    assert all(len(k["fingerprint"]) == 12 for k in keys) and new not in str(keys)
    hub.context.clock.advance(OVERLAP + 1)
    assert hub.client(old).post("/v1/stores/s1/heartbeat", json={}).status_code == 401
    assert hub.client(new).post("/v1/stores/s1/heartbeat", json={}).status_code == 200
    assert hub.store("s2").post("/v1/stores/s2/heartbeat", json={}).status_code == 200
    # the CLI, beside the serving hub; --overlap 0: a leaked key ends at once
    config = write_config(tmp_path / "hub.toml", hub.settings)
    assert main(["rotate-store-key", "s1", "--overlap", "0", "--config", str(config)]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert hub.client(new).post("/v1/stores/s1/heartbeat", json={}).status_code == 401
    newest = printed["store_key"]
    assert hub.client(newest).post("/v1/stores/s1/heartbeat", json={}).status_code == 200
    assert main(["rotate-store-key", "nope", "--config", str(config)]) == 2
    assert hub.admin().post("/v1/stores/nope/keys/rotate").status_code == 404


def test_api_key_cli(hub, tmp_path, capsys) -> None:
    config = str(write_config(tmp_path / "hub.toml", hub.settings))
    # (the CLI runs on the real clock, the hub on a test clock months ahead of it)
    assert main(["api-key", "create", "--role", "privacy", "--label", "dpo",
                 "--expires-in", "400d", "--config", config]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    with hub.client(token) as client:
        assert client.get(f"/v1/members/{subject(1)}/export").status_code == 404  # allowed
        assert client.get("/v1/offers").status_code == 403
    assert main(["api-key", "list", "--config", config]) == 0
    listed = capsys.readouterr().out
    assert "privacy" in listed and "dpo" in listed and token not in listed
    assert main(["api-key", "revoke", "dpo", "--config", config]) == 0
    assert hub.client(token).get(f"/v1/members/{subject(1)}/export").status_code == 401
    assert main(["api-key", "revoke", "dpo", "--config", config]) == 1


def test_checkin_tokens_are_limited_per_member(hub) -> None:
    hub.admin().post("/v1/members/import", content=csv_text(member_row(1), member_row(2)))
    app = hub.app_backend()
    codes = [app.post("/v1/tokens/checkin", json={"subject": subject(1), "store": "s1"})
             .status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    over = app.post("/v1/tokens/checkin", json={"subject": subject(1), "store": "s1"})
    assert over.json()["detail"]["reason"] == "rate_limited" and "retry-after" in over.headers
    assert app.post("/v1/tokens/checkin",
                    json={"subject": subject(2), "store": "s1"}).status_code == 200


def test_checkin_tokens_are_limited_per_app_key_and_bad_tokens_per_address(tmp_path) -> None:
    settings = hub_settings(tmp_path, rate_limits={"checkin_tokens_per_app_key_per_min": 2,
                                                   "checkin_tokens_app_key_burst": 2,
                                                   "auth_failures_per_min": 3})
    with EmbeddedHub(tmp_path, stores=("s1",), settings=settings) as hub:
        hub.admin().post("/v1/members/import", content=csv_text(
            *(member_row(i) for i in range(1, 5))))
        app = hub.app_backend()
        codes = [app.post("/v1/tokens/checkin", json={"subject": subject(i), "store": "s1"})
                 .status_code for i in range(1, 4)]
        assert codes == [200, 200, 429]
        other_app = hub.client(hub_token(hub.settings, "app"))  # another key, its own bucket
        assert other_app.post("/v1/tokens/checkin",
                              json={"subject": subject(4), "store": "s1"}).status_code == 200
        for _ in range(3):
            assert hub.client("guess").get("/v1/offers").status_code == 401
        blocked = hub.admin().get("/v1/offers")  # even a valid key waits: no confirmation
        assert blocked.status_code == 429
        assert blocked.json()["detail"]["reason"] == "too_many_bad_tokens"
        assert hub.client().get("/healthz").status_code == 200  # public routes stay open


def test_openapi_declares_bearer(hub) -> None:
    spec = httpx.get(f"{hub.url}/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {"bearer": []} in spec["paths"]["/v1/offers"]["get"]["security"]
