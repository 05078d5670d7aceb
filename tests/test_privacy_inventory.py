"""docs/privacy.md stays true: its column inventory names exactly the tables and columns the
edge and hub migrations create, and every table with a ``subject`` column is one the erasure
deletes from. A new column (or table) fails here until the page says what it holds."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.migrations import migrate as migrate_edge
from edge.store import _ERASE_TABLES as EDGE_ERASED
from hub.dsr import ERASE_TABLES as HUB_ERASED
from hub.migrations import migrate as migrate_hub

DOC = Path(__file__).resolve().parents[1] / "docs" / "privacy.md"
SCHEMAS: dict[str, Callable[[sqlite3.Connection], int]] = {"edge": migrate_edge,
                                                           "hub": migrate_hub}


def documented() -> dict[tuple[str, str], set[str]]:
    """``{(side, table): columns}`` from the "Column inventory" table of docs/privacy.md."""
    text = DOC.read_text("utf-8").split("## Column inventory", 1)[1]
    out: dict[tuple[str, str], set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in SCHEMAS:
            key = (cells[0], cells[1])
            assert key not in out, f"{key} listed twice"
            out[key] = {c.strip() for c in cells[2].split(",")}
    return out


def actual(side: str) -> dict[str, set[str]]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        SCHEMAS[side](conn)
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    finally:
        conn.close()


@pytest.mark.parametrize("side", sorted(SCHEMAS))
def test_every_table_and_column_is_documented(side: str) -> None:
    doc = {table: cols for (s, table), cols in documented().items() if s == side}
    schema = actual(side)
    missing_tables = sorted(set(schema) - set(doc))
    assert not missing_tables, f"docs/privacy.md lacks {side} table(s) {missing_tables}"
    stale_tables = sorted(set(doc) - set(schema))
    assert not stale_tables, f"docs/privacy.md lists {side} table(s) that no longer exist: " \
                             f"{stale_tables}"
    for table, columns in schema.items():
        assert columns - doc[table] == set(), \
            f"docs/privacy.md lacks {side}.{table} column(s) {sorted(columns - doc[table])}"
        assert doc[table] - columns == set(), \
            f"docs/privacy.md lists gone {side}.{table} column(s) {sorted(doc[table] - columns)}"


@pytest.mark.parametrize("side", sorted(SCHEMAS))
def test_every_subject_table_is_erased(side: str) -> None:
    """A table keyed by member must be in the erasure's list (the hub's ``erasures`` is the
    one record an erasure keeps, by design)."""
    erased = set(EDGE_ERASED) if side == "edge" else {t for t, _ in HUB_ERASED} | {"erasures"}
    with_subject = {t for t, cols in actual(side).items() if "subject" in cols}
    assert with_subject - erased == set(), f"{side} tables with a subject column that an " \
                                           f"erasure leaves alone: {with_subject - erased}"


def test_the_positive_control_catches_a_new_column(tmp_path: Path) -> None:
    """The parser really compares: an undocumented column is reported."""
    doc = documented()
    assert ("edge", "profiles") in doc and "first_name" in doc[("edge", "profiles")]
    schema = actual("edge")
    schema["profiles"].add("email")
    assert schema["profiles"] - doc[("edge", "profiles")] == {"email"}
