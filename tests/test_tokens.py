"""Check-in tokens: hub minting and offline edge verification, incl. forgeries and replays."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from edge.tokens import (
    REJECT_REASONS,
    CheckinClaims,
    ReplayCacheFull,
    ReplayGuard,
    TokenRejected,
    TokenVerifier,
)
from hub.tokens import (
    SCOPES,
    generate_signing_key,
    mint_checkin_token,
    private_key_pem,
    public_key_pem,
)

NOW = 1_750_000_000.0
KEY = generate_signing_key()
PEM = private_key_pem(KEY)


def mint(**kw: object) -> str:
    args: dict[str, object] = dict(
        kid="k1", subject="cust-7f3a", chain="acme", store="s001", scopes=SCOPES, now=NOW
    )
    args.update(kw)
    return mint_checkin_token(PEM, **args)  # type: ignore[arg-type]


def verifier(**kw: object) -> TokenVerifier:
    return TokenVerifier({"k1": public_key_pem(KEY)}, chain="acme", store="s001", **kw)  # type: ignore[arg-type]


def b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def rejected(v: TokenVerifier, token: str, now: float = NOW + 1) -> str:
    with pytest.raises(TokenRejected) as info:
        v.verify(token, now)
    assert info.value.reason in REJECT_REASONS
    return info.value.reason


def test_minted_token_has_the_documented_claims_and_header() -> None:
    token = mint(scopes=["app_offers", "personalize"], ttl_s=120, token_id="abc")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == "k1"
    claims = jwt.decode(
        token, KEY.public_key(), algorithms=["EdDSA"], audience="storeside:acme:s001",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims == {
        "iss": "storeside-hub", "sub": "cust-7f3a", "aud": "storeside:acme:s001",
        "iat": int(NOW), "nbf": int(NOW), "exp": int(NOW) + 120, "jti": "abc",
        "scope": "personalize app_offers",
    }
    assert len(mint()) < 600
    assert jwt.decode(mint(), options={"verify_signature": False})["jti"] != jwt.decode(
        mint(), options={"verify_signature": False})["jti"]


@pytest.mark.parametrize(
    "kw",
    [{"scopes": ["personalize", "marketing"]}, {"subject": ""}, {"subject": "  "},
     {"ttl_s": 0}, {"ttl_s": -5}, {"kid": "../etc"}, {"chain": "a:b"}, {"store": ""}],
)
def test_minting_refuses_bad_input(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        mint(**kw)


def test_minting_refuses_a_non_ed25519_key() -> None:
    from cryptography.hazmat.primitives import serialization

    ec = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ValueError, match="Ed25519"):
        mint_checkin_token(ec, kid="k", subject="s", chain="c", store="s", scopes=())
    with pytest.raises(ValueError):
        mint_checkin_token(b"garbage", kid="k", subject="s", chain="c", store="s", scopes=())


def test_valid_token_gives_claims() -> None:
    claims = verifier().verify(mint(scopes=["staff_display"], token_id="t1"), NOW + 10)
    assert claims == CheckinClaims(
        subject="cust-7f3a", token_id="t1", scopes=frozenset({"staff_display"}),
        issued_at=NOW, expires_at=NOW + 300, chain="acme", store="s001",
    )
    assert verifier().verify(mint(scopes=[]), NOW).scopes == frozenset()


def test_replayed_token_refused_within_lifetime_and_failure_does_not_burn_the_id() -> None:
    v = verifier()
    token = mint()
    assert rejected(v, token, now=NOW - 100) == "not_yet_valid"  # refused: id not remembered
    v.verify(token, NOW + 1)
    assert rejected(v, token, now=NOW + 2) == "replayed"
    assert rejected(v, token, now=NOW + 320) == "replayed"  # still inside exp + leeway
    assert rejected(v, token, now=NOW + 331) == "expired"


def test_expiry_and_not_before_use_the_given_clock_with_leeway() -> None:
    v = verifier(leeway_s=30)
    assert v.verify(mint(token_id="a"), NOW + 329).token_id == "a"
    assert rejected(v, mint(token_id="b"), now=NOW + 330) == "expired"
    assert v.verify(mint(token_id="c"), NOW - 29).token_id == "c"
    assert rejected(v, mint(token_id="d"), now=NOW - 31) == "not_yet_valid"
    # A real wall-clock check: a token minted now is valid now, not tied to PyJWT's clock.
    wall = time.time()
    assert verifier().verify(mint(now=wall), wall).subject == "cust-7f3a"


def test_forged_and_foreign_tokens() -> None:
    v = verifier()
    other = generate_signing_key()
    forged = mint_checkin_token(private_key_pem(other), kid="k1", subject="x", chain="acme",
                                store="s001", scopes=SCOPES, now=NOW)
    assert rejected(v, forged) == "bad_signature"
    head, payload, sig = mint().split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["scope"] = "personalize staff_display app_offers"
    tampered["sub"] = "someone-else"
    assert rejected(v, f"{head}.{b64(tampered)}.{sig}") == "bad_signature"
    unknown = mint_checkin_token(PEM, kid="k9", subject="x", chain="acme", store="s001",
                                 scopes=(), now=NOW)
    assert rejected(v, unknown) == "unknown_key"
    assert rejected(v, mint(store="s002")) == "wrong_audience"
    assert rejected(v, mint(chain="other")) == "wrong_audience"


def test_algorithm_confusion_is_refused() -> None:
    v = verifier()
    claims = jwt.decode(mint(), options={"verify_signature": False})
    none_token = f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(claims)}."
    assert rejected(v, none_token) == "bad_algorithm"
    # HS256 keyed with the public PEM: the classic RS/HS confusion attack.
    hs_head = b64({"alg": "HS256", "kid": "k1", "typ": "JWT"})
    body = b64(claims)
    import hashlib
    import hmac
    mac = hmac.new(public_key_pem(KEY), f"{hs_head}.{body}".encode(), hashlib.sha256).digest()
    hs = f"{hs_head}.{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert rejected(v, hs) == "bad_algorithm"
    assert rejected(v, jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": "k1"})) \
        == "bad_algorithm"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "####.####.####", "é.é.é", f"{b64([1])}.{b64({})}.xx",
     f"{b64('x')}.e30.", "eyJhbGciOiJFZERTQSJ9.!!.x"],
)
def test_malformed_tokens(token: str) -> None:
    assert rejected(verifier(), token) == "malformed"


def test_non_string_and_oversized_tokens() -> None:
    v = verifier(max_token_bytes=512)
    assert rejected(v, 12345) == "malformed"  # type: ignore[arg-type]
    assert rejected(v, "a" * 513) == "too_large"
    assert rejected(v, mint(subject="x" * 600)) == "too_large"


def _resigned(claims: dict[str, object], kid: str = "k1") -> str:
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": kid})


@pytest.mark.parametrize("missing", ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope"])
def test_missing_claims(missing: str) -> None:
    claims = jwt.decode(mint(), options={"verify_signature": False})
    del claims[missing]
    assert rejected(verifier(), _resigned(claims)) == "missing_claim"


@pytest.mark.parametrize(
    ("change", "reason"),
    [({"iss": "evil-hub"}, "wrong_issuer"), ({"sub": ""}, "missing_claim"),
     ({"jti": ""}, "missing_claim"), ({"jti": "j" * 200}, "missing_claim"),
     ({"scope": "personalize marketing"}, "bad_scope"), ({"scope": ["personalize"]}, "bad_scope"),
     ({"exp": "soon"}, "malformed"), ({"iat": True}, "malformed"),
     ({"exp": NOW + 86_400}, "too_long_lived"), ({"iat": NOW + 3600}, "not_yet_valid"),
     ({"aud": ["storeside:acme:s009"]}, "wrong_audience")],
)
def test_bad_claims(change: dict[str, object], reason: str) -> None:
    claims = jwt.decode(mint(), options={"verify_signature": False})
    claims.update(change)
    assert rejected(verifier(), _resigned(claims)) == reason


def test_audience_list_containing_this_store_is_accepted() -> None:
    claims = jwt.decode(mint(), options={"verify_signature": False})
    claims["aud"] = ["storeside:acme:s009", "storeside:acme:s001"]
    assert verifier().verify(_resigned(claims), NOW).store == "s001"


def test_key_rotation_add_and_remove() -> None:
    v = verifier()
    new = generate_signing_key()
    token = mint_checkin_token(private_key_pem(new), kid="k2", subject="c", chain="acme",
                               store="s001", scopes=(), now=NOW)
    assert rejected(v, token) == "unknown_key"
    v.add_key("k2", public_key_pem(new))
    assert v.verify(token, NOW).subject == "c"
    v.remove_key("k1")
    assert rejected(v, mint()) == "unknown_key"
    assert v.key_ids == {"k2"}
    with pytest.raises(ValueError):
        v.add_key("bad", b"not a key")


def test_verifier_config_errors() -> None:
    with pytest.raises(ValueError):
        verifier(replay_guard=ReplayGuard(margin_s=1.0))  # shorter than the 30 s leeway
    with pytest.raises(ValueError):
        TokenVerifier({}, chain="a:b", store="s")
    with pytest.raises(ValueError):
        TokenRejected("no_such_reason")


def test_replay_guard_remember_purge_and_load() -> None:
    g = ReplayGuard(max_entries=10, margin_s=5)
    assert g.remember("a", expires_at=100, now=0)
    assert not g.remember("a", expires_at=100, now=50)
    assert not g.remember("a", expires_at=100, now=104.9)  # margin
    assert g.remember("a", expires_at=300, now=105)  # id free again once it cannot be replayed
    assert g.remember("b", expires_at=10, now=0)
    assert g.purge(now=20) == 1 and "b" not in g and "a" in g
    g2 = ReplayGuard(max_entries=10, margin_s=5)
    g2.load([("x", 100.0), ("old", 1.0), ("x", 50.0)], now=10)
    assert "x" in g2 and "old" not in g2
    assert not g2.remember("x", expires_at=100, now=80)
    assert g2.purge(now=104) == 0 and g2.purge(now=105) == 1


def test_replay_guard_fails_closed_when_full_of_live_ids() -> None:
    g = ReplayGuard(max_entries=3, margin_s=0)
    for i in range(3):
        assert g.remember(f"t{i}", expires_at=100 + i, now=0)
    with pytest.raises(ReplayCacheFull):
        g.remember("t3", expires_at=200, now=50)
    assert not g.remember("t0", expires_at=100, now=50)  # replay detection still works
    assert g.remember("t3", expires_at=200, now=100.5)  # t0 expired -> evicted -> room
    assert len(g) == 3
    v = verifier(replay_guard=ReplayGuard(max_entries=1, margin_s=30))
    v.verify(mint(), NOW)
    assert rejected(v, mint(), now=NOW) == "replay_cache_full"


def test_restart_keeps_replay_protection() -> None:
    token = mint()
    first = verifier()
    claims = first.verify(token, NOW)
    persisted = [(claims.token_id, claims.expires_at)]  # what the edge writes to SQLite
    guard = ReplayGuard(margin_s=30)
    guard.load(persisted, now=NOW + 5)
    assert rejected(verifier(replay_guard=guard), token, now=NOW + 310) == "replayed"


def test_verify_is_fast() -> None:
    tokens = [mint(token_id=f"id{i}") for i in range(300)]
    v = verifier()
    start = time.perf_counter()
    for t in tokens:
        v.verify(t, NOW)
    per_verify_us = (time.perf_counter() - start) / len(tokens) * 1e6
    # ~150-200 µs on the shared 2-core CI box (Ed25519 itself ~130 µs there); loose bound.
    assert per_verify_us < 2000, per_verify_us


def test_a_token_shown_on_another_subjects_topic_does_not_spend_its_id() -> None:
    """Whoever saw a member's token (over a shoulder, a QR photo) must not be able to use it
    up: the subject check comes before the replay guard remembers the id."""
    v = verifier()
    token = mint(token_id="seen-by-someone-else")
    with pytest.raises(TokenRejected) as info:
        v.verify(token, NOW + 1, subject="cust-other")
    assert info.value.reason == "subject_mismatch"
    assert "seen-by-someone-else" not in v.replay_guard
    assert v.verify(token, NOW + 2, subject="cust-7f3a").subject == "cust-7f3a"
    assert rejected(v, token, NOW + 3) == "replayed"
