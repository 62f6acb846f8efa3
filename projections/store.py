"""Where the views live: the same store as the events, through eventsourcing's own datastores.

On SQLite the views are a file next to the events (``views.sqlite``): SQLite serialises writers
per file, so a separate file keeps view updates from queueing behind command writes. On
PostgreSQL they are tables of the events' database (and schema), prefixed ``baton_``, using the
application recorder's connection pool.

SQL is written once, SQLite-flavoured (``?`` placeholders, ``{table}`` names); each backend
formats it with its qualified table names and placeholder style.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from eventsourcing.persistence import (
    ApplicationRecorder,
    OperationalError,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresRecorder
from eventsourcing.sqlite import (
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteRecorder,
    SQLiteTrackingRecorder,
    SQLiteTransaction,
)

#: View tables (their names on PostgreSQL too; in the views file on SQLite).
TABLES: dict[str, str] = {
    "tasks": "baton_tasks",
    "steps": "baton_task_steps",
    "ready": "baton_ready_steps",
    "triggers": "baton_pending_triggers",
    "leases": "baton_claim_leases",
    "history": "baton_task_history",
    "published": "baton_published_triggers",
    "meta": "baton_projection_meta",
    "marks": "baton_prune_marks",
}

#: The tables a rebuild clears (never ``published``: what went out stays out).
VIEW_TABLES = ("tasks", "steps", "ready", "triggers", "leases", "history")

#: The layout of the view tables; views of an older layout are dropped and rebuilt at start.
SCHEMA_VERSION = 2

_DDL = [
    """CREATE TABLE IF NOT EXISTS {tasks} (
        task_id TEXT PRIMARY KEY,
        seq {int} NOT NULL,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL,
        priority {int} NOT NULL,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        version {int} NOT NULL,
        has_failed INTEGER NOT NULL,
        has_open INTEGER NOT NULL,
        header_json TEXT NOT NULL,
        context_json TEXT NOT NULL,
        trigger_json TEXT,
        current_index INTEGER,
        summary_json TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS baton_tasks_by_seq ON {tasks} (seq)",
    "CREATE INDEX IF NOT EXISTS baton_tasks_by_status ON {tasks} (status, seq)",
    "CREATE INDEX IF NOT EXISTS baton_tasks_by_session ON {tasks} (session_id, seq)",
    "CREATE INDEX IF NOT EXISTS baton_tasks_by_session_status ON {tasks} (session_id, status, seq)",
    "CREATE INDEX IF NOT EXISTS baton_tasks_failed ON {tasks} (status, has_failed)",
    "CREATE INDEX IF NOT EXISTS baton_tasks_open ON {tasks} (status, has_open)",
    """CREATE TABLE IF NOT EXISTS {steps} (
        task_id TEXT NOT NULL,
        step_index INTEGER NOT NULL,
        step_json TEXT NOT NULL,
        PRIMARY KEY (task_id, step_index))""",
    """CREATE TABLE IF NOT EXISTS {ready} (
        step_id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        priority {int} NOT NULL,
        fire_at {real} NOT NULL,
        created_at {real} NOT NULL,
        step_index INTEGER NOT NULL,
        ready_at {real} NOT NULL,
        step_json TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS baton_ready_by_task ON {ready} (task_id)",
    """CREATE INDEX IF NOT EXISTS baton_ready_by_urgency
        ON {ready} (priority, fire_at, created_at, task_id, step_index)""",
    """CREATE INDEX IF NOT EXISTS baton_ready_by_session
        ON {ready} (session_id, priority, fire_at, created_at, task_id, step_index)""",
    """CREATE TABLE IF NOT EXISTS {triggers} (
        task_id TEXT PRIMARY KEY,
        trigger_id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        priority {int} NOT NULL,
        fire_at {real} NOT NULL,
        published INTEGER NOT NULL,
        trigger_json TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS baton_triggers_due
        ON {triggers} (fire_at, priority, trigger_id) WHERE published = 0""",
    """CREATE INDEX IF NOT EXISTS baton_triggers_by_urgency
        ON {triggers} (priority, fire_at, trigger_id)""",
    """CREATE INDEX IF NOT EXISTS baton_triggers_by_session
        ON {triggers} (session_id, priority, fire_at, trigger_id)""",
    """CREATE TABLE IF NOT EXISTS {leases} (
        step_id TEXT PRIMARY KEY,
        task_id TEXT NOT NULL,
        claim_id TEXT NOT NULL,
        expires_at {real} NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS baton_leases_by_expiry ON {leases} (expires_at)",
    """CREATE TABLE IF NOT EXISTS {history} (
        task_id TEXT NOT NULL,
        version {int} NOT NULL,
        entry_json TEXT NOT NULL,
        PRIMARY KEY (task_id, version))""",
    """CREATE TABLE IF NOT EXISTS {published} (
        trigger_id TEXT PRIMARY KEY,
        published_at {real} NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {marks} (
        at {real} PRIMARY KEY,
        position {int} NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {meta} (
        id INTEGER PRIMARY KEY,
        generation {int} NOT NULL,
        schema_version {int} NOT NULL DEFAULT 1)""",
    "INSERT INTO {meta} (id, generation, schema_version)"
    f" VALUES (1, 0, {SCHEMA_VERSION}) ON CONFLICT (id) DO NOTHING",
]

log = logging.getLogger(__name__)

_SAFE_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


#: The key of PostgreSQL's advisory lock that serialises Baton's schema changes in a database
#: (advisory locks are per database): "batonddl" as a positive bigint.
DDL_LOCK_KEY = int.from_bytes(b"batonddl", "big") >> 1


#: How long an instance waits for another's schema changes before it gives up (and says so).
DDL_LOCK_WAIT_S = 60.0
_DDL_LOCK_POLL_S = 0.05

_ddl_locks_held = threading.local()


@contextmanager
def postgres_ddl_lock(datastore: Any) -> Iterator[None]:
    """Holds the advisory lock for Baton's schema changes while creating what is missing.

    ``CREATE ... IF NOT EXISTS``, ``CREATE TYPE`` and ``CREATE OR REPLACE FUNCTION`` are not safe
    run at once: of two instances starting together, one met "duplicate key value violates
    unique constraint pg_type_typname_nsp_index" or "tuple concurrently updated" and died, or
    its publisher process did. Under the lock each finds the other's tables.

    The lock lives on a connection of its own, outside ``datastore``'s pool (eventsourcing's
    PostgreSQL datastore): the schema changes need pooled connections while it is held, and
    closing it releases the lock whatever happened. It is taken with ``pg_try_advisory_lock``
    until ``DDL_LOCK_WAIT_S`` (a ``lock_timeout`` of the database does not cut the wait short,
    and a wait is logged). A thread that holds it already goes on: a nested step would
    otherwise wait for itself on another connection, forever."""
    held: set[int] = _ddl_locks_held.__dict__.setdefault("datastores", set())
    if id(datastore) in held:
        yield
        return
    connection = _connect_outside_pool(datastore)
    try:
        _take_ddl_lock(connection)
        held.add(id(datastore))
        try:
            yield
        finally:
            held.discard(id(datastore))
    finally:
        with suppress(psycopg.Error):
            connection.close()  # ends the session, which releases the lock


def _connect_outside_pool(datastore: Any) -> psycopg.Connection[Any]:
    pool = datastore.pool
    kwargs = {k: v for k, v in dict(pool.kwargs).items() if k != "row_factory"}
    if pool.get_password_func:
        kwargs["password"] = pool.get_password_func()
    try:
        # The pool's wait for a connection (POSTGRES_CONNECT_TIMEOUT); libpq's least is 2 s.
        timeout = max(2, round(pool.timeout))
        return psycopg.connect(pool.conninfo, autocommit=True, connect_timeout=timeout, **kwargs)
    except psycopg.Error as error:
        raise OperationalError(f"could not connect to take the schema lock: {error}") from error


def _take_ddl_lock(connection: psycopg.Connection[Any]) -> None:
    deadline = time.monotonic() + DDL_LOCK_WAIT_S
    waiting = False
    try:
        while True:
            row = connection.execute("SELECT pg_try_advisory_lock(%s)", (DDL_LOCK_KEY,)).fetchone()
            if row is not None and row[0]:
                if waiting:
                    log.info("schema lock taken; creating what is missing")
                return
            if time.monotonic() >= deadline:
                raise OperationalError(
                    f"another session has held Baton's schema lock (pg_advisory_lock "
                    f"{DDL_LOCK_KEY}) for over {DDL_LOCK_WAIT_S:g} s; see pg_locks"
                )
            if not waiting:
                waiting = True
                log.info("waiting for another Baton process to finish creating tables")
            time.sleep(_DDL_LOCK_POLL_S)
    except psycopg.Error as error:
        raise OperationalError(f"could not take the schema lock: {error}") from error


@contextmanager
def sqlite_write(datastore: SQLiteDatastore) -> Iterator[SQLiteCursor]:
    """A write transaction on ``datastore`` (eventsourcing's SQLite datastore) holding SQLite's
    write lock from its start (``BEGIN IMMEDIATE``, waiting up to the lock timeout while
    another connection writes), so what it reads before writing cannot be stale. A deferred
    one that read first was refused at once, without waiting, when another connection
    committed in between ("database is locked", SQLITE_BUSY_SNAPSHOT): a publisher process
    creating its tables while its service caught the views up died of it. Errors are
    eventsourcing's, as from its own transactions."""
    connection = datastore.get_connection(commit=True)
    with connection as conn, _Immediate(conn, commit=True) as cursor, cursor:
        yield cursor


class _Immediate(SQLiteTransaction):
    """eventsourcing's SQLite transaction, begun ``IMMEDIATE``; a failure to begin (the lock
    timeout) is rolled back and mapped to eventsourcing's errors like any other."""

    def __enter__(self) -> SQLiteCursor:
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            cursor.sqlite_cursor.close()
            self.__exit__(type(error), error, error.__traceback__)
            raise  # not reached: __exit__ raises the mapped error
        return cursor


class ViewStore(ABC):
    """The views' tables, transactions and tracking recorder on one backend."""

    int_type: ClassVar[str]
    real_type: ClassVar[str]

    def __init__(self, tracking: Any, names: dict[str, str]) -> None:
        self.tracking: TrackingRecorder = tracking  # SQLite's or PostgreSQL's, with create_table
        self.names = names
        self._sql: dict[str, str] = {}

    def sql(self, template: str) -> str:
        """The statement ``template`` with this backend's table names and placeholders."""
        statement = self._sql.get(template)
        if statement is None:
            statement = self._placeholders(
                template.format(**self.names, int=self.int_type, real=self.real_type)
            )
            self._sql[template] = statement
        return statement

    def _placeholders(self, statement: str) -> str:
        return statement

    def create_tables(self) -> None:
        """Creates the views; views of an older layout (their meta row says so, or has no
        ``schema_version``) are dropped first, with their tracking position, so they are
        rebuilt from the events. The published-trigger marks are kept."""
        self.tracking.create_table()  # type: ignore[attr-defined]
        with self.write() as cursor:
            # The meta first, as every writer of the views takes it (a rebuild, a batch):
            # the DDL below locks the tables, and in the other order a writer running
            # meanwhile and this start would deadlock on PostgreSQL. Views of an older layout
            # are dropped, meta included, so then the whole meta table is locked (a writer's
            # FOR UPDATE on its row locks the table before the row, and would deadlock with
            # the DROP) and the layout read again under the lock; else its row.
            stored = self._stored_schema_version(cursor)
            if stored == SCHEMA_VERSION:
                self.lock_meta(cursor)
            elif stored is not None:
                self.lock_meta_table(cursor)
                stored = self._stored_schema_version(cursor)
            if stored not in (None, SCHEMA_VERSION):
                for table in (*VIEW_TABLES, "meta"):
                    cursor.execute(self.sql(f"DROP TABLE IF EXISTS {{{table}}}"))
                cursor.execute(self.sql("DELETE FROM {tracking}"))
            for statement in _DDL:
                cursor.execute(self.sql(statement))

    def _stored_schema_version(self, cursor: Any) -> int | None:
        """The layout version of existing views: None when there are none yet."""
        if not self._meta_exists(cursor):
            return None
        cursor.execute(self.sql("SELECT * FROM {meta} WHERE id = 1"))
        row = cursor.fetchone()
        if row is None:
            return None
        return int(dict(row).get("schema_version", 1))

    @abstractmethod
    def _meta_exists(self, cursor: Any) -> bool:
        """Whether the meta table exists."""

    @abstractmethod
    def read(self) -> Any:
        """A context manager yielding a cursor in a read-only transaction."""

    @abstractmethod
    def write(self) -> Any:
        """A context manager yielding a cursor in a transaction committed on exit."""

    @abstractmethod
    def lock_meta(self, cursor: Any) -> None:
        """Serialises view writers: every batch and rebuild takes this lock first."""

    @abstractmethod
    def lock_meta_table(self, cursor: Any) -> None:
        """The whole meta table, against every writer: before views are dropped."""

    def insert_tracking(self, cursor: Any, tracking: Tracking) -> None:
        """Records the position in the caller's transaction; a position not beyond the
        recorded one raises IntegrityError (eventsourcing's single-row tracking)."""
        self.tracking._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]

    def max_tracking_id(self, cursor: Any, application_name: str) -> int | None:
        result: int | None = self.tracking._max_tracking_id(  # type: ignore[attr-defined]
            application_name, cursor
        )
        return result

    def delete_tracking(self, cursor: Any, application_name: str) -> None:
        cursor.execute(
            self.sql("DELETE FROM {tracking} WHERE application_name = ?"), (application_name,)
        )

    def close(self) -> None:  # noqa: B027 - only the SQLite store owns connections
        """Closes what this store opened (not the application's pool)."""


def _without_sync_per_commit(datastore: SQLiteDatastore) -> None:
    """Every connection of ``datastore`` commits without an fsync (``synchronous=NORMAL``: in
    WAL mode the log is synced at checkpoints). The views are derived from the event store
    and their position is recorded in the same transactions, so what an operating-system crash
    or power cut takes back is re-applied from the events; a process crash loses nothing. An
    fsync per batch of views, beside the commands' own fsync on the same disk, made each reply
    wait for the disk twice. The event store keeps SQLite's default (an fsync per commit)."""
    pool = datastore.pool
    create = pool._create_connection

    def create_relaxed() -> Any:
        connection = create()
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return connection

    pool._create_connection = create_relaxed  # type: ignore[method-assign]


class SQLiteViewStore(ViewStore):
    """The views in their own SQLite file (WAL), with eventsourcing's SQLite datastore."""

    int_type = "INTEGER"
    real_type = "REAL"

    def __init__(self, db_name: str) -> None:
        self.datastore = SQLiteDatastore(db_name=db_name, lock_timeout=10)
        _without_sync_per_commit(self.datastore)
        names = dict(TABLES, tracking="tracking")
        super().__init__(SQLiteTrackingRecorder(self.datastore), names)

    @contextmanager
    def read(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=False) as cursor:
            yield cursor

    @contextmanager
    def write(self) -> Iterator[Any]:
        """A transaction holding the write lock from its start (``sqlite_write``)."""
        with sqlite_write(self.datastore) as cursor:
            yield cursor

    def _meta_exists(self, cursor: Any) -> bool:
        cursor.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLES["meta"],)
        )
        return cursor.fetchone() is not None

    def lock_meta(self, cursor: Any) -> None:
        """Nothing to do: ``write`` holds the write lock already."""

    def lock_meta_table(self, cursor: Any) -> None:
        """Nothing to do, as for ``lock_meta``."""

    def close(self) -> None:
        self.datastore.close()


class PostgresViewStore(ViewStore):
    """The views as ``baton_*`` tables beside the events, through the application's pool."""

    int_type = "BIGINT"
    real_type = "DOUBLE PRECISION"

    def __init__(self, recorder: ApplicationRecorder) -> None:
        from eventsourcing.postgres import PostgresTrackingRecorder

        datastore = recorder.datastore  # type: ignore[attr-defined]
        schema = datastore.schema
        if not _SAFE_SCHEMA.match(schema):
            raise ValueError(f"unsupported PostgreSQL schema name {schema!r}")
        self.datastore = datastore
        tracking = PostgresTrackingRecorder(datastore, tracking_table_name="baton_view_tracking")
        names = {k: f'"{schema}".{v}' for k, v in TABLES.items()}
        names["tracking"] = f'"{schema}".baton_view_tracking'
        super().__init__(tracking, names)

    def _placeholders(self, statement: str) -> str:
        return statement.replace("?", "%s")

    def create_tables(self) -> None:
        with postgres_ddl_lock(self.datastore):
            super().create_tables()

    def _meta_exists(self, cursor: Any) -> bool:
        cursor.execute("SELECT to_regclass(%s) AS found", (self.names["meta"],))
        row = cursor.fetchone()
        return row is not None and dict(row)["found"] is not None

    @contextmanager
    def read(self) -> Iterator[Any]:
        # Autocommit: one round trip per statement, no BEGIN/ROLLBACK around a lookup. Each
        # statement reads its own committed snapshot, which every query here is happy with.
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            yield cursor

    @contextmanager
    def write(self) -> Iterator[Any]:
        with self.datastore.transaction(commit=True) as cursor:
            yield cursor

    def lock_meta(self, cursor: Any) -> None:
        cursor.execute(self.sql("SELECT generation FROM {meta} WHERE id = 1 FOR UPDATE"))

    def lock_meta_table(self, cursor: Any) -> None:
        cursor.execute(self.sql("LOCK TABLE {meta} IN ACCESS EXCLUSIVE MODE"))


def view_store_for(recorder: ApplicationRecorder, views_path: str | Path | None) -> ViewStore:
    """The view store beside ``recorder``'s events (or in ``views_path`` when given)."""
    if isinstance(recorder, PostgresRecorder) and views_path is None:
        return PostgresViewStore(recorder)
    if views_path is not None:
        return SQLiteViewStore(str(Path(views_path)))
    if isinstance(recorder, SQLiteRecorder):
        pool = recorder.datastore.pool
        if pool.is_sqlite_memory_mode:
            return SQLiteViewStore(_memory_name())
        return SQLiteViewStore(str(Path(pool.db_name).parent / "views.sqlite"))
    # An in-memory application: views in a private in-memory SQLite database.
    return SQLiteViewStore(_memory_name())


def _memory_name() -> str:
    return f"file:baton-views-{uuid.uuid4().hex}?mode=memory&cache=shared"
