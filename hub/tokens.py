"""Check-in tokens: the hub mints them, the edge verifies them offline.

The hub is the only holder of the Ed25519 private key; each store device gets the public
key(s) by key id (``kid``) so a check-in can be verified without a round trip to the hub.
This module owns the token *format* (issuer, audience, claim names, scopes) so the edge
verifier (``edge.tokens``) imports it from here instead of restating it. Key rotation and a
JWKS endpoint (``GET /v1/jwks``) build on ``kid``: every token names the key that signed it;
``jwks_to_public_keys`` turns that document back into the PEM keys the verifier takes.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

logger = logging.getLogger(__name__)

ISSUER = "storeside-hub"
ALGORITHM = "EdDSA"
# Consent purposes a customer can grant in the app; the token carries the granted ones.
SCOPES = ("personalize", "staff_display", "app_offers")
REQUIRED_CLAIMS = ("iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope")
# A kid becomes a file name (``keygen``) and a JWKS entry: keep it boring.
KID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Chain / store ids are joined with ':' in the audience, so they may not contain one.
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def audience(chain: str, store: str) -> str:
    """The audience a token for one store carries; a token for store A is useless at B."""
    for label, value in (("chain", chain), ("store", store)):
        if not _ID_PATTERN.match(value):
            raise ValueError(f"invalid {label} id {value!r}")
    return f"storeside:{chain}:{store}"


def check_kid(kid: str) -> str:
    if not isinstance(kid, str) or not KID_PATTERN.match(kid):
        raise ValueError(f"invalid key id {kid!r} (letters, digits, '.', '_', '-'; max 64)")
    return kid


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(private_pem: bytes) -> Ed25519PrivateKey:
    """Load a PEM private key, refusing anything but Ed25519 (no algorithm surprises)."""
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"signing key must be Ed25519, got {type(key).__name__}")
    return key


def load_public_key(public_pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"verification key must be Ed25519, got {type(key).__name__}")
    return key


def parse_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Validate and normalise granted scopes (ordered as in SCOPES, no duplicates)."""
    if isinstance(scopes, str):
        scopes = [s for s in scopes.replace(",", " ").split() if s]
    granted = set(scopes)
    unknown = sorted(granted - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; allowed: {list(SCOPES)}")
    return tuple(s for s in SCOPES if s in granted)


def mint_checkin_token(
    private_pem: bytes,
    *,
    kid: str,
    subject: str,
    chain: str,
    store: str,
    scopes: Iterable[str],
    ttl_s: int = 300,
    now: float | None = None,
    token_id: str | None = None,
) -> str:
    """Sign a check-in token for one customer (pseudonymous ``subject``) at one store.

    Short-lived on purpose: the edge remembers each ``jti`` until ``exp`` to refuse replays,
    so the lifetime bounds both the replay window and the edge's memory.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError("subject must be a non-empty pseudonymous id")
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not 0 < ttl_s < math.inf:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
    if token_id is not None and (not isinstance(token_id, str) or not token_id):
        raise ValueError("token_id must be a non-empty string")
    granted = parse_scopes(scopes)
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": audience(chain, store),
        "iat": issued,
        "nbf": issued,
        "exp": issued + math.ceil(ttl_s),
        "jti": token_id or uuid.uuid4().hex,
        "scope": " ".join(granted),
    }
    key = load_private_key(private_pem)
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": check_kid(kid)})


# ---------------------------------------------------------------------- JWK / JWKS (RFC 8037)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_key_jwk(kid: str, public_pem: bytes) -> dict[str, str]:
    """One JWKS entry for an Ed25519 public key (what ``GET /v1/jwks`` serves)."""
    raw = load_public_key(public_pem).public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {"kty": "OKP", "crv": "Ed25519", "kid": check_kid(kid), "x": _b64url(raw),
            "use": "sig", "alg": ALGORITHM}


def jwk_to_pem(jwk: Mapping[str, Any]) -> bytes:
    """The PEM public key of one JWKS entry; refuses anything but an Ed25519 signing key."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError(f"not an Ed25519 OKP key: kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}")
    if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
        raise ValueError("key is not for EdDSA signatures")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise ValueError("JWK has no 'x'")
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ValueError(f"bad Ed25519 public key: {exc}") from exc
    return public_key_pem(key)


def jwks_to_public_keys(jwks: Mapping[str, Any]) -> dict[str, bytes]:
    """``{kid: PEM}`` from a JWKS document, ready for ``edge.tokens.TokenVerifier``
    (``add_key`` / ``remove_key`` for rotation). Entries that are not valid Ed25519 signing
    keys are skipped with a warning: one bad entry must not take every key away."""
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        raise ValueError("JWKS has no 'keys' list")
    result: dict[str, bytes] = {}
    for entry in keys:
        try:
            if not isinstance(entry, Mapping):
                raise ValueError("entry is not an object")
            result[check_kid(entry.get("kid"))] = jwk_to_pem(entry)  # type: ignore[arg-type]
        except ValueError as exc:
            logger.warning("ignoring JWKS entry: %s", exc)
    return result
