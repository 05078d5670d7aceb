"""Next-basket recommendation (NBR) evaluation contract: dataset, folds, methods.

Every method, baseline or learned, is run through the same harness (``models.evaluate``)
against this dataset shape, so numbers are comparable.

Rules a method must follow (no leakage):
- for a user being predicted it may read that user's ``history`` and ``target_timestamp``
  (the visit time is known at serving time), never ``target_items``;
- ``fit`` may read histories and targets of the fold's ``train`` (and ``val``) users only,
  and the histories (not targets) of any user;
- any statistic used at time t comes from rows with timestamp < t.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from models.transactions import Transaction


@dataclass(frozen=True, slots=True)
class UserSequence:
    """One user's purchase history (canonical rows, any store) and the basket to predict."""

    user_id: str
    history: tuple[Transaction, ...]  # sorted by timestamp
    target_items: frozenset[str]
    target_timestamp: float


@dataclass(frozen=True, slots=True)
class Fold:
    """One user split (72/8/20 in the reality-check protocol)."""

    index: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


@dataclass(slots=True)
class NBRDataset:
    """Users with history + target, the folds, and the item universe (after filtering)."""

    name: str
    users: Mapping[str, UserSequence]
    folds: Sequence[Fold]
    items: frozenset[str]
    summary: dict[str, int | float | str] = field(default_factory=dict)


class Method(Protocol):
    """A next-basket recommender under evaluation."""

    name: str

    def fit(self, dataset: NBRDataset, fold: Fold) -> None:
        """Learn from the fold's train/val users (histories of anyone may be read)."""

    def recommend(self, user: UserSequence, k: int) -> list[str]:
        """Top-k product ids for ``user`` (must not read ``user.target_items``)."""
