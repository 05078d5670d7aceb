"""Human reasons for one suggestion ("bought 4 times, last 5 weeks ago").

Scalar lookups only (no arrays over the catalog), so explaining the few items actually
shown costs microseconds. Personal reasons are marked personal by their kind
(``models.reasons``) so the edge can drop them without personalization consent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from models.customer_history import CustomerHistory
from models.item_stats import DAY, ItemStats, daypart_of
from models.reasons import Reason

if TYPE_CHECKING:
    from models.features import Context

_DAYPART_NAMES = ("tonight", "this morning", "this afternoon", "this evening")


def ago(days: float) -> str:
    """'today', '3 days ago', '5 weeks ago', '4 months ago'."""
    if days < 1:
        return "today"
    if days < 14:
        n = round(days)
        return f"{n} day{'s' if n != 1 else ''} ago"
    if days < 60:
        return f"{round(days / 7)} weeks ago"
    return f"{round(days / 30)} months ago"


def every(days: float) -> str:
    if days < 10:
        return f"every ~{max(round(days), 1)} days"
    if days < 60:
        return f"every ~{round(days / 7)} weeks"
    return f"every ~{round(days / 30)} months"


def _copurchase_partner(history: CustomerHistory, item: int, stats: ItemStats) -> str | None:
    """The customer's item most similar to ``item`` in the product's own neighbour row."""
    mine = history.item_pos
    ids = stats.product_ids
    for neighbour in stats.copurchase.row(item):  # best first
        pid = ids[neighbour]
        if pid in mine:
            return pid
    return None


def explain(
    history: CustomerHistory, product_id: str, stats: ItemStats, context: Context,
    max_reasons: int = 3, name_of: Callable[[str], str] | None = None,
) -> list[Reason]:
    """Up to ``max_reasons`` reasons, strongest kind first (history, cycle, co-purchase...).

    ``name_of`` turns a product id into what staff call it (the edge passes its catalog's
    names); without it ids stay ids (offline evaluation has no names)."""
    reasons: list[Reason] = []
    pos = history.item_pos.get(product_id)
    item = stats.index.get(product_id)
    if pos is not None:
        count = int(history.count[pos])
        since = max(context.timestamp - float(history.last_ts[pos]), 0.0) / DAY
        times = "once" if count == 1 else f"{count} times"
        reasons.append(Reason("history", f"bought {times}, last {ago(since)}"))
        interval = float(history.interval_days[pos])
        if count >= 2 and interval >= 1 and since >= 0.8 * interval:
            reasons.append(Reason("cycle", f"usually bought {every(interval)}, "
                                           f"last {ago(since)}"))
    if item is not None:
        if history.n_baskets:
            partner = _copurchase_partner(history, item, stats)
            if partner is not None and partner != product_id:
                shown = name_of(partner) if name_of is not None else partner
                reasons.append(Reason("copurchase", f"often bought with {shown}"))
        arrays = stats.arrays
        count_all = float(arrays["count"][item])
        recent = float(arrays["recent_7"][item])
        total_recent = stats.recent_baskets.get(7, 0.0)
        if total_recent > 0 and count_all > 0 and stats.n_baskets > 0:
            lift = (recent / total_recent) / (count_all / stats.n_baskets)
            if lift >= 1.5 and recent >= 3:
                reasons.append(Reason("trend", f"selling {lift:.1f}x its usual rate this week"))
        if stats.has_time_of_day and count_all > 0:
            part = int(daypart_of(context.local))
            share = float(arrays[f"daypart_{part}"][item]) / count_all
            if share >= 0.4:
                reasons.append(Reason("popular", f"popular here {_DAYPART_NAMES[part]}"))
        if len(reasons) < max_reasons and count_all > 0:
            rank = _popularity_rank(stats, item)
            if rank is not None:
                reasons.append(Reason("popular", f"top {rank} seller this month"))
    return reasons[:max_reasons]


def _popularity_rank(stats: ItemStats, item: int) -> int | None:
    """Round rank bucket (10/50/100) among recent best sellers, or None when not among them."""
    rank = stats.popular_rank.get(item)
    if rank is None:
        return None
    for bucket in (10, 50, 100):
        if rank < bucket:
            return bucket
    return None
