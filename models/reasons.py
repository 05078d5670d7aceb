"""Why a suggestion was made: short, human reasons shown to staff and in "why this".

Reasons built from a customer's own purchases are personal data: they may only be shown
when the customer consented to personalization, so each reason says which it is.
"""

from __future__ import annotations

from dataclasses import dataclass

# "member_offer": a segment-targeted offer, which reveals the segment membership.
PERSONAL_KINDS = frozenset({"history", "copurchase", "category", "cycle", "member_offer"})
REASON_KINDS = PERSONAL_KINDS | {"popular", "trend", "context", "offer", "zone"}


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason, e.g. ``Reason("history", "bought 4 times, last 5 weeks ago")``."""

    kind: str
    text: str

    @property
    def personal(self) -> bool:
        return self.kind in PERSONAL_KINDS

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text}
