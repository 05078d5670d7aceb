"""Who may call which hub route: the one table (issue 6). No I/O.

Roles of API keys (``storeside-hub api-key create --role R``; the settings' ``admin_tokens``
and ``app_tokens`` are bootstrap keys of the roles ``admin`` and ``app``):

- ``admin``: everything a person may do (not a store's own sync calls);
- ``catalog``: products, stores' metadata, assortment and stock, offers, segments;
- ``models``: model listing, rollout and rollback;
- ``privacy``: members: CRM import, consent, access export, erasure;
- ``viewer``: read-only GETs that carry no personal data (catalog, offers, segment rules,
  models, the overview);
- ``app``: the app backend: check-in tokens, members' consent;
- ``store``: a store key, only on its own ``/v1/stores/{store}/...`` (and model bundles).

``hub.auth.authorize`` (a dependency of the whole app) looks the matched route up here and
refuses a route that is not in the table (fail closed); ``tests/test_hub_access.py`` walks
every route with every role, so a route cannot be added unprotected.
"""

from __future__ import annotations

ROLES = ("admin", "catalog", "models", "privacy", "viewer", "app")  # API keys
PRINCIPALS = (*ROLES, "store")

PUBLIC: frozenset[str] = frozenset()


def _r(*roles: str) -> frozenset[str]:
    unknown = set(roles) - set(PRINCIPALS)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}")
    return frozenset(roles)


STAFF = _r("admin", "catalog", "models", "privacy", "viewer")
CATALOG_WRITE = _r("admin", "catalog")
CATALOG_READ = _r("admin", "catalog", "viewer")
STORE_READ = _r("store", "admin", "catalog", "viewer")  # a store's catalog/offers views
MODELS_WRITE = _r("admin", "models")
MODELS_READ = _r("admin", "models", "viewer")
PRIVACY = _r("admin", "privacy")
CONSENT = _r("app", "admin", "privacy")
STORE = _r("store")
ADMIN = _r("admin")

ROUTES: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/"): PUBLIC,  # redirect to the page
    ("GET", "/admin"): PUBLIC,  # static page; its data comes from /v1/admin/overview
    ("GET", "/admin/assets/{name}"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/v1/jwks"): PUBLIC,  # public keys, by definition
    ("GET", "/v1/admin/overview"): STAFF,
    ("GET", "/metrics"): _r("admin", "viewer"),  # Prometheus; a scraper gets a viewer key
    # check-in tokens for the app backend
    ("POST", "/v1/tokens/checkin"): _r("app"),
    # members (personal data)
    ("POST", "/v1/members/import"): PRIVACY,
    ("GET", "/v1/members/{subject}/consent"): CONSENT,
    ("PUT", "/v1/members/{subject}/consent"): CONSENT,
    ("GET", "/v1/members/{subject}/export"): PRIVACY,
    ("DELETE", "/v1/members/{subject}"): PRIVACY,
    ("GET", "/v1/erasures/{erasure_id}"): PRIVACY,
    # catalog, stores
    ("PUT", "/v1/catalog/products"): CATALOG_WRITE,
    ("GET", "/v1/catalog/products"): CATALOG_READ,
    ("GET", "/v1/catalog/products/{product_id}"): CATALOG_READ,
    ("DELETE", "/v1/catalog/products/{product_id}"): CATALOG_WRITE,
    ("PUT", "/v1/stores/{store}"): CATALOG_WRITE,
    ("GET", "/v1/stores/{store}"): STORE_READ,
    ("PUT", "/v1/stores/{store}/assortment"): CATALOG_WRITE,
    ("POST", "/v1/stores/{store}/assortment/remove"): CATALOG_WRITE,
    ("GET", "/v1/stores/{store}/assortment"): STORE_READ,
    ("PUT", "/v1/stores/{store}/stock"): CATALOG_WRITE,
    ("GET", "/v1/stores/{store}/feed/catalog"): STORE_READ,
    # store keys (credentials: admin only, not the catalog team)
    ("POST", "/v1/stores/{store}/keys/rotate"): ADMIN,
    ("GET", "/v1/stores/{store}/keys"): ADMIN,
    # offers, segments (segment members are subjects: not for viewers)
    ("PUT", "/v1/offers/{offer_id}"): CATALOG_WRITE,
    ("GET", "/v1/offers"): CATALOG_READ,
    ("GET", "/v1/offers/{offer_id}"): CATALOG_READ,
    ("DELETE", "/v1/offers/{offer_id}"): CATALOG_WRITE,
    ("GET", "/v1/stores/{store}/feed/offers"): STORE_READ,
    ("PUT", "/v1/segments/{segment_id}"): CATALOG_WRITE,
    ("GET", "/v1/segments"): CATALOG_READ,
    ("POST", "/v1/segments/preview"): CATALOG_WRITE,
    ("GET", "/v1/segments/{segment_id}"): CATALOG_READ,
    ("DELETE", "/v1/segments/{segment_id}"): CATALOG_WRITE,
    ("GET", "/v1/segments/{segment_id}/members"): CATALOG_WRITE,
    # models
    ("GET", "/v1/stores/{store}/model"): STORE,
    ("GET", "/v1/models/{version}/bundle"): _r("store", "admin", "models"),
    ("POST", "/v1/stores/{store}/model/report"): STORE,
    ("GET", "/v1/models"): MODELS_READ,
    ("GET", "/v1/models/rollout"): MODELS_READ,
    ("POST", "/v1/models/{version}/rollout"): MODELS_WRITE,
    ("POST", "/v1/models/rollback"): MODELS_WRITE,
    # the sync contract: a store's own key
    ("POST", "/v1/stores/{store}/events"): STORE,
    ("GET", "/v1/stores/{store}/feed/profiles"): STORE,
    ("GET", "/v1/stores/{store}/erasures"): STORE,
    ("POST", "/v1/stores/{store}/erasures/{erasure_id}/ack"): STORE,
    ("POST", "/v1/stores/{store}/announce"): STORE,
    ("POST", "/v1/stores/{store}/heartbeat"): STORE,
}


def roles_for(method: str, path: str | None) -> frozenset[str] | None:
    """The roles a route admits (empty: public), or None: not in the table."""
    if path is None:
        return None
    return ROUTES.get((method.upper(), path))
