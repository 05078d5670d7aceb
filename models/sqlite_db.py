"""The SQLite file discipline the edge store and the hub database share, written once.

One file in WAL mode, ONE writer connection behind a lock, and a read-only connection per
thread (an sqlite3 connection must not be used by two threads mid-statement; WAL lets those
readers run beside the writer without blocking it). Every write is one short
``BEGIN IMMEDIATE`` transaction (``models.sqlite_schema.immediate_transaction``), the schema
is migrated when the file is opened, and ``close`` closes the readers, runs
``PRAGMA optimize`` on the writer and closes it.

What differs between the edge and the hub is passed in: the numbered migrations, the extra
pragmas of the writer (the hub's bigger cache, ...), the per-thread reader object and the
error raised once the file is closed. The domain logic stays in ``edge/store.py`` and
``hub/storage.py``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Generic, Protocol, Self, TypeVar

from models.sqlite_schema import Migration, apply_migrations, immediate_transaction

logger = logging.getLogger(__name__)

SYNCHRONOUS_MODES = ("NORMAL", "FULL")


class _Closeable(Protocol):
    def close(self) -> None: ...


ReaderT = TypeVar("ReaderT", bound=_Closeable)


def connect_readonly(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """A read-only connection (``mode=ro`` and ``query_only``): a bug in a read path can
    never write. ``check_same_thread=False`` only so ``close()`` may close it from another
    thread; it is used by the one thread that created it."""
    uri = path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA query_only = ON")
    return conn


def open_writer(
    path: Path,
    migrations: Sequence[Migration],
    *,
    busy_timeout_ms: int,
    synchronous: str,
    pragmas: Sequence[str] = (),
) -> tuple[sqlite3.Connection, int]:
    """Open the writer connection (autocommit, WAL, ``synchronous``, busy timeout,
    ``secure_delete``, then ``pragmas``) and migrate the file; returns it with the schema
    version reached. Closed again if anything fails, so a refused file is never held open."""
    if synchronous not in SYNCHRONOUS_MODES:
        raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL (got {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # Erasure must not leave a member's rows readable in free pages.
        conn.execute("PRAGMA secure_delete = ON")
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
        version = apply_migrations(conn, migrations)
    except BaseException:
        conn.close()
        raise
    return conn, version


class SQLiteDB(Generic[ReaderT]):
    """Owner of one SQLite file: the writer connection, its lock and the per-thread readers.

    Subclasses set ``closed_error`` (raised by any use after ``close``) and implement
    ``_open_reader`` (what one thread reads through)."""

    closed_error: ClassVar[type[Exception]] = RuntimeError
    closed_message: ClassVar[str] = "database is closed"

    def __init__(
        self,
        path: str | Path,
        migrations: Sequence[Migration],
        *,
        busy_timeout_ms: int = 5000,
        synchronous: str = "NORMAL",
        pragmas: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._write_lock = threading.Lock()
        # Held by every checkpoint of this file, ours and a background checkpointer's
        # (edge.wal_checkpointer): SQLite runs one checkpoint at a time and answers a second
        # with SQLITE_BUSY, which would leave an erasure's WAL untruncated.
        self.checkpoint_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[ReaderT] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._conn, self.schema_version = open_writer(
            self.path, migrations, busy_timeout_ms=busy_timeout_ms, synchronous=synchronous,
            pragmas=pragmas,
        )

    def _open_reader(self) -> ReaderT:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise self.closed_error(self.closed_message)

    def close(self) -> None:
        """Close every reader and the writer; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        with self._write_lock:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                logger.warning("PRAGMA optimize failed on close", exc_info=True)
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reader(self) -> ReaderT:
        """This thread's reader (created on first use, closed by ``close``)."""
        reader: ReaderT | None = getattr(self._local, "reader", None)
        if reader is None:
            self._check_open()
            reader = self._open_reader()
            self._local.reader = reader
            with self._readers_lock:
                self._readers.append(reader)
        return reader

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short ``BEGIN IMMEDIATE`` transaction on the writer connection."""
        self._check_open()
        with self._write_lock, immediate_transaction(self._conn) as conn:
            yield conn

    def checkpoint(self) -> bool:
        """Checkpoint and truncate the WAL (after an erasure, so deleted rows do not linger
        in it). False when a reader blocked it; the next checkpoint finishes the job."""
        self._check_open()
        with self.checkpoint_lock, self._write_lock:
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            logger.warning("WAL checkpoint was blocked by a reader; retried later")
        return not busy
