"""Authorization of every edge request against ``edge.access.ROUTES`` (issue 6).

``authorize`` is a dependency of the whole app (``edge.app``): it finds the matched route's
rule and lets the request through only with a credential the rule accepts:

- a tablet's device token (``Authorization: Bearer sst_…`` or the HttpOnly cookie), checked
  by ``edge.devices.DeviceRegistry``;
- an admin or till token (``Authorization: Bearer ssk_…``, never a cookie), checked by
  ``edge.api_keys.ApiKeyRegistry``;
- nothing, on a public route, or on a ``loopback`` route from the device itself when
  ``auth.open_on_loopback`` is on (127.0.0.1 / ::1 and no proxy header).

No or unknown token → 401 with ``WWW-Authenticate: Bearer``; a valid token of the wrong kind
→ 403. Bad tokens are counted per client address; past ``rate_limits.auth_failures_per_min``
the address gets 429 for every credential, valid or not, until its bucket refills (so a
guess cannot be confirmed). The security schemes are declared for OpenAPI (``bearer``,
``tablet_cookie``) so generated clients and schemathesis know how to authenticate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from edge.access import Rule, rule_for
from edge.api_keys import TOKEN_PREFIX as API_KEY_PREFIX
from edge.api_keys import ApiKeyRegistry
from edge.tablet_auth import AUTH_HEADERS, bearer_token, registry
from models.too_many import too_many

logger = logging.getLogger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
DEFAULT_COOKIE = "storeside_tablet"  # TabletSettings.cookie_name's default (OpenAPI only)

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="An admin or till token (storeside-edge admin-token create), or a paired "
                "tablet's device token (POST /v1/devices/pair).",
)
cookie_scheme = APIKeyCookie(
    name=DEFAULT_COOKIE, auto_error=False, scheme_name="tablet_cookie",
    description="The device cookie a browser gets when it redeems a pairing code.",
)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # anonymous, loopback, device, admin, till
    ident: str | None = None  # device_id or key_id


ANONYMOUS = Principal("anonymous")
LOCAL = Principal("loopback")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_loopback(request: Request) -> bool:
    """A request from the store device itself, not relayed by a proxy on it."""
    if client_address(request) not in LOOPBACK:
        return False
    return not any(h in request.headers for h in PROXY_HEADERS)


def limits_exempt(request: Request) -> bool:
    return bool(request.app.state.settings.rate_limits.exempt_loopback and is_loopback(request))


def api_keys(request: Request) -> ApiKeyRegistry:
    keys: ApiKeyRegistry | None = getattr(request.app.state, "api_keys", None)
    if keys is None:
        raise HTTPException(503, {"reason": "starting"})
    return keys


def resolve(request: Request, token: str, *, from_cookie: bool) -> Principal | None:
    """The principal a token stands for, or None. API keys never come from a cookie (a
    browser would send it with cross-site requests)."""
    if token.startswith(API_KEY_PREFIX):
        key = None if from_cookie else api_keys(request).authenticate(token)
        return None if key is None else Principal(key.role, key.key_id)
    device = registry(request).authenticate(token)
    if device is None:
        return None
    request.state.device = device
    return Principal("device", device.device_id)


def _credential(request: Request, rule: Rule) -> tuple[str | None, bool]:
    token = bearer_token(request)
    if token is not None:
        return token, False
    if "device" in rule.roles:
        cookie = request.cookies.get(request.app.state.settings.tablet.cookie_name)
        if cookie:
            return cookie, True
    return None, False


def _refuse(status: int, reason: str, **detail: object) -> HTTPException:
    headers = AUTH_HEADERS if status == 401 else None
    return HTTPException(status, {"reason": reason, **detail}, headers=headers)


def authorize(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    _cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    """The caller, if the route's rule lets it in; else 401 / 403 / 429. A plain ``def``:
    FastAPI runs it in its thread pool, so a (cache-missing) SQLite look-up never blocks
    the event loop."""
    route = request.scope.get("route")
    rule = rule_for(request.method, getattr(route, "path", None))
    metrics = request.app.state.metrics
    if rule is None:  # fail closed: a route nobody put in edge.access.ROUTES
        logger.error("route %s %s is not in the access table; refused",
                     request.method, getattr(route, "path", "?"))
        raise _refuse(403, "unmapped_route")
    if rule.public:
        return ANONYMOUS
    settings = request.app.state.settings
    if rule.loopback and settings.auth.open_on_loopback and is_loopback(request):
        return LOCAL
    device_only = rule.roles == {"device"}
    address = client_address(request)
    failures = request.app.state.auth_failures
    exempt = limits_exempt(request)
    wait = 0.0 if exempt else failures.wait(address)
    if wait:
        metrics.rate_limited.labels("auth").inc()
        raise too_many(wait, "too_many_bad_tokens")
    token, from_cookie = _credential(request, rule)
    if token is None:
        metrics.auth_refused.labels("no_token").inc()
        raise _refuse(401, "no_device_token" if device_only else "no_token")
    principal = resolve(request, token, from_cookie=from_cookie)
    if principal is None:
        metrics.auth_refused.labels("bad_token").inc()
        if not exempt:
            failures.take(address)
        logger.info("bad token on %s %s", request.method, getattr(route, "path", "?"))
        raise _refuse(401, "bad_device_token" if device_only else "bad_token")
    if principal.kind not in rule.roles:
        metrics.auth_refused.labels("forbidden").inc()
        raise _refuse(403, "forbidden", role=principal.kind, needs=sorted(rule.roles))
    request.state.principal = principal
    return principal


def sees_details(request: Request) -> bool:
    """Whether a public route may show operational details (``/readyz``): the device
    itself (when open on loopback) or a valid admin token; never raises."""
    if request.app.state.settings.auth.open_on_loopback and is_loopback(request):
        return True
    token = bearer_token(request)
    if token is None or not token.startswith(API_KEY_PREFIX):
        return False
    keys: ApiKeyRegistry | None = getattr(request.app.state, "api_keys", None)
    key = keys.authenticate(token) if keys is not None else None
    return key is not None and key.role == "admin"


Authorized = Annotated[Principal, Depends(authorize)]
