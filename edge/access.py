"""Who may call which edge route: the one table (issue 6). No I/O.

Every route of the edge app is a key of ``ROUTES``; ``edge.api_auth.authorize`` (a
dependency of the whole app) looks the matched route up and refuses a route that is not in
the table (fail closed), and ``tests/test_edge_access.py`` walks every route of the app
against this table with every kind of caller, so a route cannot be added unprotected.

Principals: ``device`` (a paired staff tablet), ``admin`` and ``till`` (API keys,
``storeside-edge admin-token``). ``loopback`` marks routes the store device itself may call
without a token when ``auth.open_on_loopback`` is on (ops reads, the HTTP till).
"""

from __future__ import annotations

from dataclasses import dataclass

PRINCIPALS = ("device", "admin", "till")


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[str]  # empty: public (the route checks its own credential, if any)
    loopback: bool = False

    @property
    def public(self) -> bool:
        return not self.roles


def _rule(*roles: str, loopback: bool = False) -> Rule:
    unknown = set(roles) - set(PRINCIPALS)
    if unknown:
        raise ValueError(f"unknown principal(s) {sorted(unknown)}")
    return Rule(frozenset(roles), loopback)


PUBLIC = _rule()
TABLET = _rule("device")
ADMIN = _rule("admin")

ROUTES: dict[tuple[str, str], Rule] = {
    # liveness for anyone; readiness answers only {"ready": bool} unless admin / loopback
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): _rule("admin", loopback=True),
    # operational status, no member data: the tablet page shows the store and degradation
    ("GET", "/v1/status"): _rule("admin", "device", loopback=True),
    # the kiosk: the signed check-in token is the credential (rate-limited per address)
    ("POST", "/v1/checkin"): PUBLIC,
    ("POST", "/v1/pos"): _rule("till", "admin", loopback=True),
    # staff tablets
    ("GET", "/v1/visits"): TABLET,
    ("GET", "/v1/visits/{visit_id}/recommendations"): TABLET,
    ("GET", "/v1/stream"): TABLET,
    ("POST", "/v1/feedback"): TABLET,
    ("POST", "/v1/checkin/qr"): TABLET,
    ("POST", "/v1/devices/rotate"): TABLET,
    # the page answers an unpaired browser with the pairing form; pairing: the one-time code
    ("GET", "/tablet"): PUBLIC,
    ("GET", "/tablet/assets/{name}"): PUBLIC,
    ("GET", "/tablet/pair"): PUBLIC,
    ("POST", "/v1/devices/pair"): PUBLIC,
    # device management over HTTP (the CLI does the same on the device)
    ("GET", "/v1/devices"): ADMIN,
    ("POST", "/v1/devices/{device_id}/revoke"): ADMIN,
    ("POST", "/v1/pairing-codes"): ADMIN,
}


def rule_for(method: str, path: str | None) -> Rule | None:
    """The rule of a route (its path template), or None: not in the table."""
    if path is None:
        return None
    return ROUTES.get((method.upper(), path))
