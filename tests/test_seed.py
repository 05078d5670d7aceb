"""Deterministic store seeding from the real Ta-Feng zip."""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge.seed import (
    CONSENT_VARIANTS,
    DEFAULT_ZONES,
    MIN_BASKETS,
    SeedSummary,
    pseudonymous_id,
    seed_store,
)
from edge.store import EdgeStore

NOW = 1_800_000_000.0
DAY = 86_400.0
SMALL = {"n_products": 200, "n_members": 12}
Seeded = tuple[Path, SeedSummary]
TAFENG_ROWS = 817_741


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows in a stable order (schema_version holds wall-clock stamps)."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
            "('schema_version', 'sqlite_sequence') ORDER BY name")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in tables}


def seeded(path: Path, tafeng_zip: Path, **kwargs: Any) -> SeedSummary:
    with EdgeStore(path) as store:
        return seed_store(store, tafeng_zip, now=NOW, **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, tafeng_zip: Path) -> Seeded:
    """One small seeded store shared by the read-only checks (seeding costs ~1 s)."""
    path = tmp_path_factory.mktemp("seed") / "edge.db"
    return path, seeded(path, tafeng_zip, consent_mix=True)


def test_pseudonymous_id_is_stable_salted_and_opaque() -> None:
    first = pseudonymous_id("01104905", "demo")
    assert first == pseudonymous_id("01104905", "demo")
    assert first.startswith("m-") and len(first) == 18 and int(first[2:], 16) >= 0
    assert first != pseudonymous_id("01104905", "other-chain")
    assert first != pseudonymous_id("01104906", "demo")
    with pytest.raises(ValueError):
        pseudonymous_id("01104905", "")


def test_seed_counts_and_content(small: Seeded) -> None:
    path, summary = small
    assert (summary.products, summary.members, summary.offers) == (200, 12, 10)
    assert 0 < summary.rows_read < TAFENG_ROWS // 4  # streamed a prefix, stopped early
    assert len(set(summary.subjects)) == 12
    with EdgeStore(path) as store:
        catalog = store.catalog()
        assert len(catalog) == 200 and {i.zone for i in catalog} <= set(DEFAULT_ZONES)
        assert any(i.stock == 0 for i in catalog) and any(i.stock > 0 for i in catalog)
        assert all(i.price > 0 and re.fullmatch(r"\d+ #\d+", i.name) for i in catalog)
        zone_of: dict[str | None, str | None] = {}
        for item in catalog:  # one zone per category
            assert zone_of.setdefault(item.category, item.zone) == item.zone
        in_catalog = {i.product_id for i in catalog}
        lines = 0
        for subject in summary.subjects:
            profile = store.get_profile(subject)
            assert profile is not None and profile.first_name and profile.birthday
            assert profile.tier in {"gold", "silver", "bronze"}
            assert set(profile.preferences) == {"sizes", "brands", "notes"}
            assert profile.consent == summary.consent[subject]
            history = store.purchase_history(subject, max_baskets=1000)
            lines += len(history)
            assert len({t.basket_id for t in history}) >= MIN_BASKETS
            assert {t.product_id for t in history} <= in_catalog
            # basket ids are rebuilt from the pseudonym: no real customer id is stored
            assert all(t.basket_id.startswith(subject + "-b") for t in history)
            last = max(t.timestamp for t in history)
            assert NOW - 7 * DAY < last < NOW  # a few days before "now"
            aggregates = store.get_aggregates(subject)
            assert aggregates is not None and aggregates.last_purchase_ts == last
        assert lines == summary.purchases == len(store.all_purchases())
        assert len(store.active_offers(NOW)) == 10


def test_same_seed_same_database_other_seed_differs(
    small: Seeded, tmp_path: Path, tafeng_zip: Path
) -> None:
    path, summary = small
    again = seeded(tmp_path / "again.db", tafeng_zip, consent_mix=True)
    assert again == summary and dump(tmp_path / "again.db") == dump(path)
    other = seeded(tmp_path / "other.db", tafeng_zip, consent_mix=True, seed=8)
    assert other.products == summary.products
    assert dump(tmp_path / "other.db") != dump(path)


def test_reseeding_replaces_instead_of_appending(
    small: Seeded, tmp_path: Path, tafeng_zip: Path
) -> None:
    path, summary = small
    copy = tmp_path / "copy.db"
    with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    assert seeded(copy, tafeng_zip, consent_mix=True) == summary
    assert dump(copy) == dump(path)


def test_consent_mix_has_every_variant(small: Seeded) -> None:
    _, summary = small
    variants = Counter(tuple(sorted(c.items())) for c in summary.consent.values())
    expected = Counter(
        tuple(sorted(CONSENT_VARIANTS[i % len(CONSENT_VARIANTS)].items()))
        for i in range(summary.members)
    )
    assert variants == expected and len(variants) == len(
        {tuple(sorted(v.items())) for v in CONSENT_VARIANTS})


def test_default_size_seeds_in_a_few_seconds(tmp_path: Path, tafeng_zip: Path) -> None:
    started = time.perf_counter()
    summary = seeded(tmp_path / "edge.db", tafeng_zip, n_products=1000, n_members=300)
    elapsed = time.perf_counter() - started
    assert (summary.products, summary.members) == (1000, 300)
    assert all(all(c.values()) for c in summary.consent.values())  # default: all granted
    assert elapsed < 10, f"seeding took {elapsed:.1f}s"  # ~2 s here; 10 s allows a busy CI box
