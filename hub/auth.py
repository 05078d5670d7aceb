"""Who is calling: bearer tokens → a role (admin, app backend, or one store).

- admin and app tokens come from the settings as sha256 digests;
- a store key is looked up by its sha256 in the ``stores`` table and may only touch
  ``/v1/stores/<its own store>/...``.

No or unknown token → 401 (with ``WWW-Authenticate: Bearer``); a known token of the wrong
role or for another store → 403. Comparing digests in sets is safe against timing attacks:
the attacker does not control the digest's prefix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request

from hub.context import Ctx
from hub.stores import store_for_key, token_sha256

logger = logging.getLogger(__name__)

Role = Literal["admin", "app", "store"]


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    store: str | None = None


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, {"reason": reason}, headers={"WWW-Authenticate": "Bearer"})


def _forbidden(principal: Principal, needed: str) -> HTTPException:
    return HTTPException(403, {"reason": "forbidden", "role": principal.role, "needs": needed})


def identify(request: Request, context: Ctx) -> Principal:
    """The caller's principal, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing_token")
    digest = token_sha256(token)
    settings = context.settings
    if digest in settings.admin_tokens:
        return Principal("admin")
    if digest in settings.app_tokens:
        return Principal("app")
    store = store_for_key(context.db, token)
    if store is not None:
        return Principal("store", store)
    raise _unauthorized("bad_token")


Caller = Annotated[Principal, Depends(identify)]


def require_admin(principal: Caller) -> Principal:
    if principal.role != "admin":
        raise _forbidden(principal, "admin")
    return principal


def require_app(principal: Caller) -> Principal:
    if principal.role != "app":
        raise _forbidden(principal, "app")
    return principal


def require_store(store: str, principal: Caller) -> Principal:
    """The key of exactly the store in the path (``{store}``)."""
    if principal.role != "store" or principal.store != store:
        raise _forbidden(principal, f"store:{store}")
    return principal


def require_store_or_admin(store: str, principal: Caller) -> Principal:
    """That store's key, or the central team (e.g. model bundles, diagnostics)."""
    if principal.role == "admin":
        return principal
    return require_store(store, principal)


Admin = Annotated[Principal, Depends(require_admin)]
App = Annotated[Principal, Depends(require_app)]
StoreKey = Annotated[Principal, Depends(require_store)]
StoreOrAdmin = Annotated[Principal, Depends(require_store_or_admin)]
