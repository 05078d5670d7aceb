"""Numbered SQLite schema steps, applied at start-up: the one runner the edge and the hub share.

A store device and the hub keep their SQLite files across software versions, so a schema is
never "created" but migrated: every step has a number, runs in its own ``BEGIN IMMEDIATE``
transaction together with the ``schema_version`` row that records it, and the applied set is
re-read inside that transaction, so two processes starting at once (or a crash half-way) can
neither skip nor repeat a step. Steps are append-only: never edit a released one.

Steps are applied by *set*, not by "everything above the highest number": the hub hands out
number ranges to independent parts (hub core 1..9, catalog 10..19, models 20+), so a step 3
written after step 10 was released must still run on a file that already has 10.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

logger = logging.getLogger(__name__)


class SchemaError(RuntimeError):
    """The file's schema is newer than this software knows (a downgrade), or a step failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def _applied(conn: sqlite3.Connection) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}


@contextmanager
def immediate_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction on an autocommit connection: the write lock is
    taken at BEGIN, so it never fails half-way on a lock upgrade; rolled back on any error,
    also when COMMIT itself failed (disk full, I/O). Edge store, hub storage and the tablet
    registry all write through it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[Migration], target: int | None = None
) -> int:
    """Apply every step of ``migrations`` (up to ``target``) not yet in the file; returns the
    highest version applied. ``conn`` must be in autocommit mode (``isolation_level=None``):
    each step manages its own transaction. Re-running is a no-op.
    """
    if conn.isolation_level is not None:
        raise SchemaError("migrate() needs a connection opened with isolation_level=None")
    versions = [step.version for step in migrations]
    if versions != sorted(set(versions)):
        raise SchemaError(f"migration numbers must be unique and ascending: {versions}")
    latest = versions[-1] if versions else 0
    goal = latest if target is None else target
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    applied = _applied(conn)
    unknown = sorted(applied - set(versions))
    if unknown and unknown[-1] > latest:
        raise SchemaError(
            f"database schema version {unknown[-1]} is newer than this software ({latest})"
        )
    for step in migrations:
        if step.version > goal:
            break
        if step.version in applied:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if step.version in _applied(conn):  # another process got there first
                conn.execute("ROLLBACK")
                continue
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version(version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise SchemaError(f"migration {step.version} ({step.name}) failed: {exc}") from exc
        logger.info("schema migrated to version %d (%s)", step.version, step.name)
    return current_version(conn)
