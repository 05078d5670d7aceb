"""What one retention sweep did, at the edge or at the hub. Pure.

Both sweeps delete in short write batches so that the service's writer waits for one batch
at most; the report keeps what a data-protection officer and an operator ask afterwards:
how many rows of which table went, in how many batches, and the longest write-lock hold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class BatchTally:
    started_at: float
    rows: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    max_hold_s: float = 0.0
    total_hold_s: float = 0.0

    def batch(self, counts: Mapping[str, int], hold_s: float) -> None:
        """One write batch: rows deleted per table, and how long it held the write lock."""
        self.rows.update({table: n for table, n in counts.items() if n})
        self.batches += 1
        self.max_hold_s = max(self.max_hold_s, hold_s)
        self.total_hold_s += hold_s

    def tally(self) -> dict[str, object]:
        return {"started_at": self.started_at, "rows": dict(sorted(self.rows.items())),
                "batches": self.batches, "max_hold_ms": round(self.max_hold_s * 1000, 3),
                "total_hold_ms": round(self.total_hold_s * 1000, 3)}
