"""Business rules after scoring: what staff see and whether the customer's app gets an offer.

The model only orders items; these rules decide what may be shown. They are pure (the edge
passes in counts it read from SQLite and the local hour) so every rule is unit-testable and
every removal is explained in ``Decision.dropped`` for metrics and "why not".

Order of the rules, and why:
1. per item — invalid data, out of stock, dismissed in this visit, shown too often in this
   visit (a staff dismiss counts as shown upstream), unaffordable. Caps protect the customer
   and apply with or without personalization consent.
2. ranking by score, then one variant per style (the best-scored variant that passed the
   item rules stands for its style: "Wool beanie, grey" and "…, navy" are one suggestion,
   the card names the other variants), then diversity (at most
   ``max_per_category_in_top`` per category in the top ``top_n``, filled from lower ranks),
   then the daily impression budget shrinks the list. The model scores SKUs; styles are a
   rule because two colours of one product are one idea to the customer, not two.
3. consent — without ``personalize`` no personal data is used (no affordability filter, no
   personal reasons); ``allowed_by`` records which consent let each suggestion through.
4. the app offer: the best suggestion only, with ``app_offers`` consent, outside quiet hours,
   under its caps, above the relevance threshold. It is a second impression (other channel),
   so it needs one more unit of the daily budget after the staff list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from models.config_checks import check_fields
from models.reasons import Reason

DROP_RULES = (
    "invalid", "out_of_stock", "dismissed", "shown_cap", "unaffordable", "same_style",
    "diversity", "daily_cap",
)
APP_OFFER_BLOCKS = ("no_consent", "quiet_hours", "capped", "nothing_eligible", "below_threshold")
PERSONALIZE, APP_OFFERS, POPULAR = "personalize", "app_offers", "popular"


@dataclass(frozen=True)
class Candidate:
    product_id: str
    name: str
    category: str
    price: float
    stock: int
    zone: str | None
    score: float
    relevance: float
    reasons: tuple[Reason, ...]
    # The product's style (model) when it is one variant of several; None: its own style.
    # Keyword-only with a default so every existing positional constructor keeps working.
    style_id: str | None = field(default=None, kw_only=True)


def style_key(product_id: str, style_id: str | None) -> str:
    """One key per style; a product without a style is a style of its own (the prefixes
    keep a product id from colliding with a style id of the same spelling)."""
    return f"s:{style_id}" if style_id is not None else f"p:{product_id}"


@dataclass(frozen=True)
class CustomerContext:
    scopes: frozenset[str]
    typical_basket_value: float | None
    typical_item_price: float | None


@dataclass(frozen=True)
class CapState:
    """What the customer already saw, all channels (read from the impression log).

    ``dismissed_in_visit`` holds every product not to suggest again in this visit: the
    store puts the other variants of a dismissed product's style in it too.
    """

    shown_in_visit: Mapping[str, int]
    dismissed_in_visit: frozenset[str]
    impressions_today: int
    app_offers_today: int
    app_offers_in_visit: int


@dataclass(frozen=True)
class RulesConfig:
    top_n: int = 5
    max_per_category_in_top: int = 2
    max_item_shows_per_visit: int = 2
    max_impressions_per_day: int = 40
    max_app_offers_per_day: int = 2
    max_app_offers_per_visit: int = 1
    app_offer_min_relevance: float = 0.05
    affordability_multiple: float = 3.0
    quiet_hours: tuple[int, int] = (21, 8)  # local hours [start, end), wraps midnight

    def __post_init__(self) -> None:
        check_fields(self, ("top_n", "max_per_category_in_top"), minimum=1)
        check_fields(self, ("max_item_shows_per_visit", "max_impressions_per_day",
                            "max_app_offers_per_day", "max_app_offers_per_visit"), minimum=0)
        check_fields(self, ("app_offer_min_relevance",), finite=True)
        if not 0 < self.affordability_multiple < math.inf:
            raise ValueError("affordability_multiple must be > 0")
        hours = self.quiet_hours
        if len(hours) != 2 or not all(isinstance(h, int) and 0 <= h <= 24 for h in hours):
            raise ValueError("quiet_hours must be two hours in 0..24, e.g. (21, 8)")


@dataclass(frozen=True)
class Suggestion(Candidate):
    """A candidate that passed the rules (``reasons`` cut to non-personal ones without
    consent), with its place in the list and the consents that let it through."""

    rank: int
    allowed_by: tuple[str, ...]  # consents that allowed it ("popular": no personal data used)


@dataclass(frozen=True)
class Decision:
    staff: tuple[Suggestion, ...]
    app_offer: Suggestion | None
    app_offer_blocked: str | None  # one of APP_OFFER_BLOCKS when app_offer is None
    dropped: Mapping[str, str]  # product_id -> rule (DROP_RULES) that removed it


def in_quiet_hours(local_hour: int, quiet_hours: tuple[int, int]) -> bool:
    """[start, end) in local hours; start > end wraps midnight; start == end: never quiet."""
    start, end = quiet_hours
    if start == end:
        return False
    if start < end:
        return start <= local_hour < end
    return local_hour >= start or local_hour < end


def affordability_limit(customer: CustomerContext, config: RulesConfig) -> float | None:
    """Highest price worth suggesting, or None (no filter).

    ``affordability_multiple`` x the customer's typical item price; if only the basket value
    is known, one item may not cost more than a whole typical basket. Spend is personal data:
    without ``personalize`` consent, or with unknown spend, nothing is filtered.
    """
    if PERSONALIZE not in customer.scopes:
        return None
    item, basket = customer.typical_item_price, customer.typical_basket_value
    if item is not None and math.isfinite(item) and item > 0:
        return config.affordability_multiple * item
    if basket is not None and math.isfinite(basket) and basket > 0:
        return basket
    return None


def _item_rule(c: Candidate, caps: CapState, config: RulesConfig, limit: float | None) -> str:
    if not (math.isfinite(c.price) and c.price >= 0 and math.isfinite(c.score)
            and math.isfinite(c.relevance)):
        return "invalid"
    if c.stock <= 0:
        return "out_of_stock"
    if c.product_id in caps.dismissed_in_visit:
        return "dismissed"
    if caps.shown_in_visit.get(c.product_id, 0) >= config.max_item_shows_per_visit:
        return "shown_cap"
    if limit is not None and c.price > limit:
        return "unaffordable"
    return ""


def _suggestion(c: Candidate, rank: int, personal: bool, used_spend: bool) -> Suggestion:
    reasons = c.reasons if personal else tuple(r for r in c.reasons if not r.personal)
    informed = personal and (used_spend or any(r.personal for r in reasons))
    candidate: dict[str, Any] = {f.name: getattr(c, f.name) for f in fields(Candidate)}
    return Suggestion(
        **{**candidate, "reasons": reasons}, rank=rank,
        allowed_by=(PERSONALIZE,) if informed else (POPULAR,),
    )


def decide(
    candidates: Sequence[Candidate],
    customer: CustomerContext,
    caps: CapState,
    config: RulesConfig,
    local_hour: int,
) -> Decision:
    """Apply every rule to scored candidates (any order; duplicates: first one wins).

    ``dropped`` lists items removed by a rule; items that simply ranked below the top are
    not listed (they were not removed, just not chosen).
    """
    if isinstance(local_hour, bool) or not isinstance(local_hour, int) or \
            not 0 <= local_hour <= 23:
        raise ValueError(f"local_hour must be an int in 0..23, got {local_hour!r}")
    personal = PERSONALIZE in customer.scopes
    limit = affordability_limit(customer, config)
    dropped: dict[str, str] = {}
    seen: set[str] = set()
    eligible: list[Candidate] = []
    for c in candidates:
        if c.product_id in seen:
            continue
        seen.add(c.product_id)
        rule = _item_rule(c, caps, config, limit)
        if rule:
            dropped[c.product_id] = rule
        else:
            eligible.append(c)
    eligible.sort(key=lambda c: (-c.score, -c.relevance, c.product_id))

    picked: list[Candidate] = []
    per_category: dict[str, int] = {}
    styles: set[str] = set()
    for c in eligible:
        if len(picked) >= config.top_n:
            break
        style = style_key(c.product_id, c.style_id)
        if style in styles:  # its best variant already stood for it (picked or not)
            dropped[c.product_id] = "same_style"
            continue
        styles.add(style)
        if per_category.get(c.category, 0) >= config.max_per_category_in_top:
            dropped[c.product_id] = "diversity"
            continue
        picked.append(c)
        per_category[c.category] = per_category.get(c.category, 0) + 1
    budget = max(0, config.max_impressions_per_day - caps.impressions_today)
    for c in picked[budget:]:
        dropped[c.product_id] = "daily_cap"
    used_spend = limit is not None
    staff = tuple(
        _suggestion(c, rank, personal, used_spend)
        for rank, c in enumerate(picked[:budget], start=1)
    )

    blocked: str | None = None
    if APP_OFFERS not in customer.scopes:
        blocked = "no_consent"
    elif in_quiet_hours(local_hour, config.quiet_hours):
        blocked = "quiet_hours"
    elif (caps.app_offers_today >= config.max_app_offers_per_day
          or caps.app_offers_in_visit >= config.max_app_offers_per_visit
          or budget - len(staff) < 1):
        blocked = "capped"
    elif not staff:
        blocked = "nothing_eligible"
    elif staff[0].relevance < config.app_offer_min_relevance:
        blocked = "below_threshold"
    offer = None
    if blocked is None:
        offer = replace(staff[0], allowed_by=(APP_OFFERS, *staff[0].allowed_by))
    return Decision(staff=staff, app_offer=offer, app_offer_blocked=blocked, dropped=dropped)
