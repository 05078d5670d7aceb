"""Check-in tokens issued by the hub verify at the edge with keys taken from /v1/jwks;
key rotation keeps two keys valid for the overlap, then retires the old one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.tokens import TokenRejected, TokenVerifier
from hub.cli import main
from hub.devtools import EmbeddedHub, HubProcess, hub_settings
from hub.tokens import jwk_to_pem, jwks_to_public_keys, public_key_jwk
from tests.hub_env import Clock, csv_text, member_row, subject, write_config

OVERLAP = 3600.0


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[EmbeddedHub]:
    settings = hub_settings(tmp_path, tokens={"keys_dir": tmp_path / "keys",
                                              "rotation_overlap_s": OVERLAP, "ttl_s": 120})
    with EmbeddedHub(tmp_path, stores=("s1", "s2"), settings=settings,
                     clock=Clock()) as running:
        running.admin().post("/v1/members/import", content=csv_text(
            member_row(1), member_row(2, consent="yes,no,no")))
        yield running


def _verifier(hub: EmbeddedHub, store: str = "s1") -> TokenVerifier:
    keys = jwks_to_public_keys(httpx.get(f"{hub.url}/v1/jwks").json())
    return TokenVerifier(keys, chain=hub.settings.chain, store=store)


def _issue(hub: EmbeddedHub, **body: object) -> httpx.Response:
    return hub.app_backend().post("/v1/tokens/checkin", json=body)


def test_token_carries_current_consents_and_verifies_at_the_edge(hub: EmbeddedHub) -> None:
    now = hub.context.clock.now
    r = _issue(hub, subject=subject(2), store="s1")
    assert r.status_code == 200
    body = r.json()
    assert body["expires_at"] == int(now) + 120
    claims = _verifier(hub).verify(body["token"], now)
    assert claims.subject == subject(2)
    assert claims.scopes == {"personalize"}  # only what the member granted
    with pytest.raises(TokenRejected) as refused:
        _verifier(hub, "s2").verify(body["token"], now)
    assert refused.value.reason == "wrong_audience"
    # a subset may be asked for; a purpose not granted is refused, never silently added
    r = _issue(hub, subject=subject(1), store="s1", scopes=["app_offers"])
    assert _verifier(hub).verify(r.json()["token"], now).scopes == {"app_offers"}
    r = _issue(hub, subject=subject(2), store="s1", scopes=["personalize", "app_offers"])
    assert (r.status_code, r.json()["detail"]["reason"]) == (403, "consent_not_granted")
    # revoking a consent changes the next token at once
    hub.app_backend().put(f"/v1/members/{subject(1)}/consent",
                          json={"consent": {"personalize": False}})
    r = _issue(hub, subject=subject(1), store="s1")
    assert _verifier(hub).verify(r.json()["token"], now).scopes == {"staff_display",
                                                                      "app_offers"}


def test_token_issuing_refuses_bad_callers_and_input(hub: EmbeddedHub) -> None:
    body = {"subject": subject(1), "store": "s1"}
    assert hub.client().post("/v1/tokens/checkin", json=body).status_code == 401
    assert hub.admin().post("/v1/tokens/checkin", json=body).status_code == 403
    assert hub.store("s1").post("/v1/tokens/checkin", json=body).status_code == 403
    for bad, status, reason in (
        ({"subject": subject(77), "store": "s1"}, 404, "unknown_member"),
        ({"subject": subject(1), "store": "s9"}, 404, "unknown_store"),
        ({"subject": subject(1), "store": "s1", "scopes": ["spam"]}, 422, "unknown_scope"),
    ):
        r = _issue(hub, **bad)
        assert (r.status_code, r.json()["detail"]["reason"]) == (status, reason)
    assert _issue(hub, subject="alice", store="s1").status_code == 422


def test_rotation_keeps_two_keys_valid_then_retires_the_old_one(hub: EmbeddedHub) -> None:
    clock = hub.context.clock
    old = _issue(hub, subject=subject(1), store="s1").json()
    edge = _verifier(hub)  # an edge that fetched the JWKS before the rotation
    new_key = hub.context.keys.rotate()
    jwks = httpx.get(f"{hub.url}/v1/jwks").json()
    assert {k["kid"] for k in jwks["keys"]} == {old["kid"], new_key.kid}
    new = _issue(hub, subject=subject(1), store="s1").json()
    assert new["kid"] == new_key.kid != old["kid"]
    # the edge refreshes its keys from the JWKS; both tokens verify
    for kid, pem in jwks_to_public_keys(jwks).items():
        edge.add_key(kid, pem)
    assert edge.verify(old["token"], clock.now).subject == subject(1)
    assert edge.verify(new["token"], clock.now).subject == subject(1)
    # after the overlap the old key is retired: gone from the JWKS, refused by the edge
    clock.advance(OVERLAP + 1)
    jwks = httpx.get(f"{hub.url}/v1/jwks").json()
    assert [k["kid"] for k in jwks["keys"]] == [new_key.kid]
    fresh = _verifier(hub)
    late = _issue(hub, subject=subject(2), store="s1").json()
    assert fresh.verify(late["token"], clock.now).subject == subject(2)
    with pytest.raises(TokenRejected) as refused:  # key checked before the lifetime
        fresh.verify(old["token"], clock.now)
    assert refused.value.reason == "unknown_key"


def test_jwk_round_trip_and_bad_entries_are_skipped(hub: EmbeddedHub) -> None:
    key = hub.context.keys.valid_keys()[0]
    jwk = public_key_jwk(key.kid, key.public_pem)
    assert jwk_to_pem(jwk) == key.public_pem
    for bad in ({**jwk, "crv": "P-256"}, {**jwk, "x": "!!"}, {**jwk, "alg": "RS256"}):
        with pytest.raises(ValueError):
            jwk_to_pem(bad)
    keys = jwks_to_public_keys({"keys": [jwk, {**jwk, "kid": "bad", "kty": "RSA"}, "junk"]})
    assert list(keys) == [key.kid]


def test_cli_init_add_store_rotate_and_a_served_hub(tmp_path: Path, capsys) -> None:
    settings, admin, app = hub_settings(tmp_path)
    config = write_config(tmp_path / "hub.toml", settings)
    assert main(["init", "--config", str(config), "--kid", "first"]) == 0
    assert main(["add-store", "s1", "--name", "Main street", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    store_key = out.split("store_key=")[1].strip()
    assert main(["add-store", "s1", "--config", str(config)]) == 2
    assert store_key.encode() not in settings.db_path.read_bytes()  # only its sha256
    assert main(["rotate-keys", "--config", str(config), "--kid", "second"]) == 0
    assert "valid now: second, first" in capsys.readouterr().out
    with HubProcess(tmp_path, settings=(settings, admin, app)) as served:
        assert sorted(k["kid"] for k in served.client().get("/v1/jwks").json()["keys"]) == [
            "first", "second"]
        ok = served.client(store_key).post("/v1/stores/s1/heartbeat", json={})
        assert ok.status_code == 200
        assert served.client(store_key).post("/v1/stores/s2/heartbeat",
                                              json={}).status_code == 403
