"""Who is calling and may they: bearer tokens → a principal, checked against ``hub.roles``.

- bootstrap keys from the settings (``admin_tokens`` → admin, ``app_tokens`` → app), as
  sha256 digests;
- API keys with a role (``hub.api_keys``, ``storeside-hub api-key create``);
- store keys (``hub.stores``, several valid during a rotation), which may only touch
  ``/v1/stores/<their own store>/...`` (and model bundles).

``authorize`` is a dependency of the whole app (``hub.app``): it finds the matched route in
``hub.roles.ROUTES`` (not there: 403, fail closed) and admits only the roles it names. No or
unknown token → 401 (with ``WWW-Authenticate: Bearer``); a known token of the wrong role or
for another store → 403. Bad tokens are counted per client address: past
``rate_limits.auth_failures_per_min`` the address gets 429 for every token, valid or not,
until its bucket refills, so guessing cannot go on and cannot be confirmed. Comparing
digests in sets is safe against timing attacks: the attacker does not control the digest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.api_keys import key_for_digest
from hub.context import HubContext, get_context
from hub.roles import roles_for
from hub.stores import store_for_digest, token_sha256
from models.ratelimit import RateLimiter
from models.too_many import too_many

logger = logging.getLogger(__name__)

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="A hub API key (storeside-hub api-key create --role R), a bootstrap admin / "
                "app token from the settings, or a store key (add-store, rotate-store-key).",
)


@dataclass(frozen=True, slots=True)
class Principal:
    role: str  # admin, catalog, models, privacy, viewer, app, store; anonymous (public)
    store: str | None = None
    key: str | None = None  # which key: API key id, or a digest prefix (rate limits, logs)


ANONYMOUS = Principal("anonymous")


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(401, {"reason": reason}, headers={"WWW-Authenticate": "Bearer"})


def _forbidden(principal: Principal, needed: str) -> HTTPException:
    return HTTPException(403, {"reason": "forbidden", "role": principal.role, "needs": needed})


class CountedLimiter(RateLimiter):
    """A limiter that counts its refusals in ``storeside_hub_rate_limited_total{limiter}``:
    a ``take`` with no token left, or a ``wait`` (the check before a request, for limits
    counted on failures) that says "not yet"."""

    def __init__(self, name: str, metrics: Any, per_min: float, burst: int | None) -> None:
        super().__init__(per_min, burst=burst)
        self._refused = metrics.rate_limited.labels(name) if metrics is not None else None

    def _count(self, wait: float) -> float:
        if wait and self._refused is not None:
            self._refused.inc()
        return wait

    def take(self, key: str) -> float:
        return self._count(super().take(key))

    def wait(self, key: str) -> float:
        return self._count(super().wait(key))


def limiter(context: HubContext, name: str, per_min: float, burst: int | None = None
            ) -> RateLimiter:
    """The process's limiter ``name`` (made on first use; kept in ``context.extras``)."""
    existing = context.extras.get(f"ratelimit:{name}")
    if existing is None:
        made = CountedLimiter(name, context.extras.get("metrics"), per_min, burst)
        existing = context.extras.setdefault(f"ratelimit:{name}", made)
    return existing  # type: ignore[no-any-return]


def identify(request: Request, context: HubContext) -> Principal:
    """The caller's principal, or 401 (429 for an address that guessed too often)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing_token")
    address = request.client.host if request.client else "unknown"
    failures = limiter(context, "auth_failures", context.settings.rate_limits.auth_failures_per_min)
    wait = failures.wait(address)
    if wait:
        raise too_many(wait, "too_many_bad_tokens")
    digest = token_sha256(token)
    settings = context.settings
    if digest in settings.admin_tokens:
        return Principal("admin", key=f"boot-{digest[:8]}")
    if digest in settings.app_tokens:
        return Principal("app", key=f"boot-{digest[:8]}")
    if len(token) <= 256:
        key = key_for_digest(context.db, digest)
        if key is not None:
            return Principal(key.role, key=key.key_id)
        store = store_for_digest(context.db, digest)
        if store is not None:
            return Principal("store", store, key=digest[:12])
    failures.take(address)
    logger.info("bad bearer token on %s %s", request.method, request.url.path)
    raise _unauthorized("bad_token")


def authorize(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The caller, if the matched route's roles (``hub.roles``) admit it; else 401/403/429.
    A 401/403 is counted by reason (``storeside_hub_auth_refused_total``; a 429 is counted
    by its limiter)."""
    try:
        return _authorize(request)
    except HTTPException as exc:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None and exc.status_code in (401, 403):
            detail = exc.detail if isinstance(exc.detail, dict) else {}
            metrics.auth_refused.labels(str(detail.get("reason", "other"))).inc()
        raise


def _authorize(request: Request) -> Principal:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    roles = roles_for(request.method, path)
    if roles is None:  # fail closed: a route nobody put in hub.roles.ROUTES
        logger.error("route %s %s is not in the role table; refused", request.method, path)
        raise HTTPException(403, {"reason": "unmapped_route"})
    if not roles:
        return ANONYMOUS
    principal = identify(request, get_context(request))
    if principal.role == "store":
        own = request.path_params.get("store")
        if "store" not in roles or (own is not None and own != principal.store):
            needed = f"store:{own}" if own is not None else "|".join(sorted(roles))
            raise _forbidden(principal, needed)
    elif principal.role not in roles:
        raise _forbidden(principal, "|".join(sorted(roles)))
    request.state.principal = principal
    return principal


# Handlers that need the caller (its role, its key) take ``Allowed``: the same dependency
# as the app-wide one, so FastAPI runs it once per request.
Allowed = Annotated[Principal, Depends(authorize)]
