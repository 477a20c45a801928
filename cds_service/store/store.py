"""Persistence of coverage assertions, card feedback and used client token ids (SQLite by default, PostgreSQL for
multi-instance deployments), written for several gunicorn workers writing at once.

Process model: ``Store.from_url`` opens no connection, so create the Store in each worker
(after gunicorn forks). A Store that already holds connections when the process forks
(e.g. ``migrate()`` run in a ``--preload`` master) is still safe: the child drops the
inherited pool without closing it (closing would end the parent's PostgreSQL sessions)
and opens its own connections. Call ``dispose()`` on shutdown.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextlib import nullcontext
from dataclasses import fields
from datetime import datetime
from datetime import timezone
from functools import partial
from pathlib import Path
from typing import Any
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from .migrations import ALEMBIC_INI
from .records import CoverageAssertionRecord, FeedbackRecord, StoreError
from .schema import card_feedback, client_token, coverage_assertion

_log = logging.getLogger(__name__)

# How long a request waits for another process's SQLite write before failing.
_SQLITE_BUSY_TIMEOUT_MS = 10_000
# Waiting for another process's migration: longer, a worker must not die at boot over it.
_SQLITE_MIGRATION_WAIT_MS = 600_000
# Execution option read by _sqlite_begin: which BEGIN to emit.
_SQLITE_BEGIN = "cds_sqlite_begin"
# Unless the URL says otherwise; keeps ping() and requests from hanging on a dead host.
_POSTGRES_CONNECT_TIMEOUT_S = 5
# Key of the PostgreSQL advisory lock serialising migrate() (any constant, same in all processes).
_MIGRATION_LOCK_KEY = 0x6364_735F_6D69_6772  # "cds_migr"

_ASSERTION_COLUMNS = [coverage_assertion.c[f.name] for f in fields(CoverageAssertionRecord)]
_FEEDBACK_COLUMNS = [card_feedback.c[f.name] for f in fields(FeedbackRecord)]


class _CompiledInsert:
    """An INSERT of dataclass records, compiled once for a dialect and run on the DBAPI cursor.

    Every hook call stores its coverage assertions. Through ``Connection.execute`` that cost
    0.6 ms in the benchmark's hook, most of it SQLAlchemy's per-execution work (cache lookup,
    parameter processing, result set-up); on the cursor it is 0.3 ms. The column types' own
    bind processors convert the values, so rows are stored exactly as Core would store them.
    """

    def __init__(self, table: sa.Table, record_type: type, dialect: sa.Dialect) -> None:
        names = [f.name for f in fields(record_type)]
        compiled = sa.insert(table).values({name: sa.bindparam(name) for name in names}).compile(dialect=dialect)
        self.sql = str(compiled)
        #: Parameter order for positional paramstyles (SQLite's qmark); None for named ones (psycopg).
        self._order = compiled.positiontup
        self._converters = [(name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]

    def parameters(self, records: Sequence[Any]) -> list[Any]:
        """One parameter set per record. Raises ValueError for values the column types refuse."""
        rows = []
        for record in records:
            values = {name: convert(getattr(record, name)) if convert else getattr(record, name)
                      for name, convert in self._converters}
            rows.append(values if self._order is None else tuple(values[name] for name in self._order))
        return rows


def default_sqlite_url(data_dir: Path) -> str:
    """URL of the single-host database file in ``data_dir`` (created if missing)."""
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'cds-service.sqlite3'}"


SqliteSync = Literal["normal", "full"]

class Store:
    """Reads and writes assertions and feedback; one SQLAlchemy engine (and pool) per Store."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._insert_assertions = _CompiledInsert(coverage_assertion, CoverageAssertionRecord, engine.dialect)
        self._insert_feedback = _CompiledInsert(card_feedback, FeedbackRecord, engine.dialect)
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._claim_token = insert(client_token).on_conflict_do_nothing().returning(client_token.c.jti)
        # SQLite has one writer at a time and its busy handler sleeps in coarse steps:
        # threads of one process take turns here instead (other processes still wait in SQLite).
        self._write_lock = threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        os.register_at_fork(
            after_in_child=partial(_forget_inherited_pool, weakref.ref(engine))
        )

    @classmethod
    def from_url(cls, database_url: str, *, sqlite_synchronous: SqliteSync = "normal") -> Store:
        """Build a Store for ``sqlite:///path`` or ``postgresql[+psycopg]://...``; connects lazily.

        *sqlite_synchronous*: with the WAL journal, "normal" syncs at checkpoints, not at every
        commit: a committed assertion survives a crash or restart of the service, and the file
        never corrupts, but an OS crash or power loss may drop the last commits. "full" syncs
        every commit (no such window) at about 1 ms of CPU per hook call under load.
        """
        try:
            url = make_url(database_url)
        except ArgumentError as exc:
            raise StoreError("could not parse the database URL") from exc
        if url.drivername in ("sqlite", "sqlite+pysqlite"):
            return cls(_sqlite_engine(url, sqlite_synchronous))
        if url.drivername in ("postgresql", "postgresql+psycopg"):
            return cls(_postgresql_engine(url))
        raise StoreError(
            f"unsupported database URL scheme {url.drivername!r}: "
            "use sqlite:///path or postgresql://..."
        )

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision; every worker may call this at start.

        Racing callers are serialised by a database-wide lock held for the whole migration
        (see ``_migration_lock``); the later ones wait, then find the schema at head.
        """
        config = Config(ALEMBIC_INI)
        try:
            with self._engine.connect() as conn, _migration_lock(conn):
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except CommandError as exc:  # e.g. the database is at a revision this code lacks
            raise StoreError(f"could not migrate the database: {exc}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"could not migrate the database ({type(exc).__name__})") from exc

    def save_assertions(self, records: Sequence[CoverageAssertionRecord]) -> None:
        """Insert all records in one transaction; an already stored assertion_id is an error."""
        self._insert("save coverage assertions", self._insert_assertions, records)

    def get_assertion(self, assertion_id: str) -> CoverageAssertionRecord | None:
        """The stored assertion, or None if this id was never saved."""
        query = sa.select(*_ASSERTION_COLUMNS).where(
            coverage_assertion.c.assertion_id == assertion_id
        )
        with self._transaction("read a coverage assertion") as conn:
            row = conn.execute(query).first()
        return None if row is None else CoverageAssertionRecord(**row._mapping)

    def save_feedback(self, records: Sequence[FeedbackRecord]) -> None:
        """Append all records in one transaction (a card may get feedback several times)."""
        self._insert("save card feedback", self._insert_feedback, records)

    def feedback_for_card(self, card_uuid: str) -> list[FeedbackRecord]:
        """All feedback for the card, oldest ``received_at`` first, then in insertion order."""
        query = (
            sa.select(*_FEEDBACK_COLUMNS)
            .where(card_feedback.c.card_uuid == card_uuid)
            .order_by(card_feedback.c.received_at, card_feedback.c.id)
        )
        with self._transaction("read card feedback") as conn:
            rows = conn.execute(query).all()
        return [FeedbackRecord(**row._mapping) for row in rows]

    def claim_token_id(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Record a client JWT's (iss, jti) as used; False when it was used before (a replay).

        Shared by every worker and instance on this database. Expired ids are deleted in the
        same transaction, so the table holds only tokens that could still be presented.
        """
        now = datetime.now(timezone.utc)
        try:
            with self._write_lock, self._engine.connect() as conn, conn.begin():
                conn.execute(sa.delete(client_token).where(client_token.c.expires_at < now))
                inserted = conn.execute(self._claim_token, {"iss": iss, "jti": jti, "expires_at": expires_at})
                return inserted.first() is not None
        except SQLAlchemyError as exc:
            raise StoreError(f"could not record a client token id ({type(exc).__name__})") from exc

    def ping(self) -> bool:
        """Readiness check: can the database answer a trivial query? Never raises."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as exc:  # a readiness probe must answer, whatever went wrong
            _log.warning("database ping failed: %s", type(exc).__name__)
            return False
        return True

    def dispose(self) -> None:
        """Close pooled connections (shutdown; the Store reconnects if used again)."""
        self._engine.dispose()

    @contextmanager
    def _transaction(self, action: str) -> Iterator[sa.Connection]:
        """One read transaction; database errors become StoreError without parameter values."""
        try:
            with self._engine.connect() as conn, conn.begin():
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"could not {action} ({type(exc).__name__})") from exc

    def _insert(self, action: str, statement: _CompiledInsert, records: Sequence[Any]) -> None:
        """Insert all records in one transaction on a pooled DBAPI connection, or none of them.

        Errors become StoreError without parameter values, caused by SQLAlchemy's exception
        for the driver error (IntegrityError, OperationalError …), as Core would raise it.
        """
        if not records:
            return
        try:
            parameters = statement.parameters(records)
        except (ValueError, TypeError) as exc:  # e.g. a naive datetime
            raise StoreError(f"could not {action} ({type(exc).__name__})") from exc
        dialect = self._engine.dialect
        with self._write_lock:
            try:
                connection = self._engine.raw_connection()
            except SQLAlchemyError as exc:
                raise StoreError(f"could not {action} ({type(exc).__name__})") from exc
            cursor = None
            try:
                cursor = connection.cursor()
                if dialect.name == "sqlite":
                    cursor.execute("BEGIN IMMEDIATE")  # queue for the write lock up front (busy_timeout)
                cursor.executemany(statement.sql, parameters)
                connection.commit()
            except dialect.loaded_dbapi.Error as exc:
                disconnected = dialect.is_disconnect(exc, connection, cursor)
                if disconnected:
                    connection.invalidate(exc)
                else:
                    _rollback(connection)
                wrapped = sa.exc.DBAPIError.instance(statement.sql, None, exc, dialect.loaded_dbapi.Error,
                                                     hide_parameters=True, connection_invalidated=disconnected,
                                                     dialect=dialect)
                raise StoreError(f"could not {action} ({type(wrapped).__name__})") from wrapped
            finally:
                if cursor is not None:
                    cursor.close()
                connection.close()


def _rollback(connection: Any) -> None:
    """Roll back after a failed write; a failing rollback must not hide the error that caused it."""
    try:
        connection.rollback()
    except Exception as exc:  # the connection is returned to the pool, which resets or discards it
        _log.warning("rollback after a failed write failed: %s", type(exc).__name__)


@contextmanager
def _migration_lock(conn: sa.Connection) -> Iterator[None]:
    """Open the transaction the migration runs in, holding a database-wide exclusive lock.

    PostgreSQL: a transaction-scoped advisory lock (released at commit/rollback).
    SQLite: BEGIN IMMEDIATE takes the single write lock; other migrators wait for it in
    SQLite's busy handler, for longer than request traffic would.
    Either way Alembic reads the current revision only once the lock is held.
    """
    if conn.dialect.name == "postgresql":
        with conn.begin():
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
            yield
        return
    sqlite_connection = conn.connection.driver_connection
    sqlite_connection.execute(f"PRAGMA busy_timeout = {_SQLITE_MIGRATION_WAIT_MS}")
    try:
        conn.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
        with conn.begin():
            yield
    finally:
        sqlite_connection.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")


def _sqlite_engine(url: URL, synchronous: SqliteSync) -> sa.Engine:
    if url.database in (None, "", ":memory:"):
        raise StoreError("in-memory SQLite would lose everything on restart: give a file path")
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False}, hide_parameters=True
    )
    event.listen(engine, "connect", partial(_sqlite_connect, synchronous=synchronous))
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, connection_record: Any, *, synchronous: SqliteSync) -> None:
    """Per-connection settings (SQLite keeps none of these across connections except WAL)."""
    # Stop pysqlite from issuing BEGIN itself (it does so late and never before DDL, which
    # would make migrations non-transactional); _sqlite_begin emits it instead.
    dbapi_connection.isolation_level = None
    dbapi_connection.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
    dbapi_connection.execute("PRAGMA foreign_keys = ON")
    _enable_wal(dbapi_connection)
    dbapi_connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")


def _enable_wal(dbapi_connection: sqlite3.Connection) -> None:
    """WAL journal: readers never block the writer and vice versa. Persistent in the file.

    While another connection switches a new file to WAL, SQLite answers "locked" at once
    instead of waiting in its busy handler, so wait here, as long as busy_timeout would.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(conn: sa.Connection) -> None:
    """BEGIN, or BEGIN IMMEDIATE for migrations (see the _SQLITE_BEGIN option)."""
    conn.exec_driver_sql(conn.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))


def _postgresql_engine(url: URL) -> sa.Engine:
    url = url.set(drivername="postgresql+psycopg")
    connect_args = {} if "connect_timeout" in url.query else {
        "connect_timeout": _POSTGRES_CONNECT_TIMEOUT_S
    }
    return sa.create_engine(
        url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args
    )


def _forget_inherited_pool(engine_ref: weakref.ref[sa.Engine]) -> None:
    """In a forked child: drop, without closing, connections that belong to the parent."""
    engine = engine_ref()
    if engine is not None:
        engine.dispose(close=False)
