"""Module-scoped synthetic sales for tests of features and ranking: the transactions and the
item statistics built from them, made once per test module (building them per test would
cost more than most of those tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from models.features import ItemStats
from models.synthetic import synthetic_transactions
from models.transactions import Transaction


def synthetic_fixtures(**shape: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The ``rows`` (``synthetic_transactions(**shape)``) and ``stats`` (their ItemStats)
    fixtures of a test module: ``rows, stats = synthetic_fixtures(customers=40, seed=5)``."""

    @pytest.fixture(scope="module")
    def rows() -> list[Transaction]:
        return list(synthetic_transactions(**shape))

    @pytest.fixture(scope="module")
    def stats(rows: list[Transaction]) -> ItemStats:
        return ItemStats.build(rows)

    return rows, stats
