"""Which members a store's profile feed carries, and in which state. Pure (no I/O).

A member is relevant to a store while any of these holds: it is the member's home store; the
member visited it (a basket or a check-in) within ``visit_window_days``; the member's app
announced an approach (geofence) within ``announce_window_h``. The feed row's state is
``upsert`` only when the member exists and granted ``personalize``: without it the edge must
not keep the profile, so the store is told ``delete / consent_revoked`` instead.
"""

from __future__ import annotations

from typing import Literal, Protocol

FOREVER = 1e18  # relevant_until of a home store
DAY = 86_400.0
HOUR = 3_600.0

Op = Literal["upsert", "delete"]


class Windows(Protocol):
    """The relevance windows (``hub.settings.RelevanceSettings``)."""

    @property
    def visit_window_days(self) -> float: ...

    @property
    def announce_window_h(self) -> float: ...


def relevant_until(
    *,
    home: bool,
    last_visit_ts: float | None,
    announced_at: float | None,
    cfg: Windows,
) -> float:
    """Until when the member stays in that store's feed (``-inf`` if not at all)."""
    until = FOREVER if home else float("-inf")
    if last_visit_ts is not None:
        until = max(until, last_visit_ts + cfg.visit_window_days * DAY)
    if announced_at is not None:
        until = max(until, announced_at + cfg.announce_window_h * HOUR)
    return until


def feed_state(
    *, until: float, now: float, member_exists: bool, personalize: bool,
    previous: tuple[str, str | None] | None,
) -> tuple[Op, str | None] | None:
    """The (op, reason) the store must hold now, or None when the store needs no row
    (never relevant, never told). ``previous`` is the row the store was last sent."""
    if until > now and member_exists:
        return ("upsert", None) if personalize else ("delete", "consent_revoked")
    if previous is None:
        return None
    if previous[0] == "upsert":
        return ("delete", "not_relevant")
    return ("delete", previous[1])
