"""The edge's clock against the hub's, measured at every heartbeat.

Why it matters: check-in tokens are minted on the hub's clock and verified on the edge's;
beyond the token leeway every hub token is refused as expired or not yet valid, and the
store looks broken for no visible reason. The skew is shown (status, metric, one warning
when it crosses the leeway and one when it is back), not corrected: time sync (NTP) is the
fix, and an edge that silently shifted its own clock would also shift its visits.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


class ClockSkew:
    """Edge minus hub clock at the last heartbeat; ``gauge`` is a prometheus Gauge."""

    def __init__(self, gauge: Any, warn_s: float) -> None:
        self._gauge = gauge
        self.warn_s = warn_s
        self.value: float | None = None

    def note(self, answer: Any, sent_at: float, answered_at: float) -> None:
        """The hub's time is taken as the middle of the round trip (error: half of it)."""
        hub_time = answer.get("hub_time") if isinstance(answer, dict) else None
        if isinstance(hub_time, bool) or not isinstance(hub_time, int | float):
            return  # an older hub: nothing to compare with
        skew = round((sent_at + answered_at) / 2 - float(hub_time), 3)
        was_off = self.value is not None and abs(self.value) > self.warn_s
        self.value = skew
        self._gauge.set(skew)
        if abs(skew) > self.warn_s and not was_off:
            logger.warning("edge clock is %+.1f s off the hub's (token leeway %.0f s): hub "
                           "check-in tokens will be refused as expired / not yet valid; "
                           "fix the time sync (NTP)", skew, self.warn_s)
        elif was_off and abs(skew) <= self.warn_s:
            logger.warning("edge clock back within %.0f s of the hub's (%+.1f s)",
                           self.warn_s, skew)
