"""Shared fixtures: a private Mosquitto per test session, Ta-Feng location."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.broker import PrivateBroker

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TAFENG_ZIP = SHARED_DATA / "tafeng" / "ta_feng.csv.zip"
REALITY_CHECK = SHARED_DATA / "tafeng_nbr_reality_check"


@pytest.fixture(scope="session")
def broker() -> Iterator[PrivateBroker]:
    """Mosquitto on a free loopback port, shared by the whole test session."""
    with PrivateBroker() as running:
        yield running


@pytest.fixture()
def fresh_broker() -> Iterator[PrivateBroker]:
    """A broker of the test's own, for tests that restart or kill it."""
    with PrivateBroker() as running:
        yield running


@pytest.fixture(scope="session")
def tafeng_zip() -> Path:
    if not TAFENG_ZIP.exists():
        pytest.skip(f"Ta-Feng data not found at {TAFENG_ZIP}")
    return TAFENG_ZIP
