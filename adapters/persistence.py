"""Retention in the event store: command records outlive their idempotency window only so long.

A command record (the first reply to a command that carried an id) is an aggregate of one event
in the application's log. Past the idempotency window it is deleted: a repeat of its id then
runs as a new command, as a repeat of a JetStream message id does past the stream's duplicate
window. The log is read by position (notification id); deleting old records below every
reader's position leaves a gap no reader waits on.

The window is measured with prune marks (``views.prune_mark``): every sweep records the log's
last position and the time; records at or below the newest mark older than the window go.
The log's newest row always stays (a position must never be given out twice), so the
last record of an idle log outlives the window until anything else is appended.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import lru_cache
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    Notification,
    ProcessRecorder,
    StoredEvent,
)
from eventsourcing.postgres import PostgresFactory, PostgresRecorder, PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor, SQLiteRecorder

from baton.domain.session import CommandRecord
from baton.projections.store import postgres_ddl_lock, sqlite_write

_TOPIC = CommandRecord.Created.TOPIC


def delete_command_records(recorder: Any, up_to: int) -> int:
    """Deletes the command records at or below log position ``up_to``; returns how many."""
    datastore = recorder.datastore
    table = recorder.events_table_name
    if isinstance(recorder, SQLiteRecorder):
        # SQLite gives a new row the largest rowid + 1: deleting the newest row (after an idle
        # window, usually a command record) would hand its position, which every reader has
        # passed, to the next event, and that event would never be read. The newest row stays.
        where = (
            f"FROM {table} WHERE topic = ? AND rowid <= ?"
            f" AND rowid < (SELECT MAX(rowid) FROM {table})"
        )
    elif isinstance(recorder, PostgresRecorder):
        # A sequence never gives a position twice; the newest row stays here too, so both
        # stores keep the same records.
        name = f'"{datastore.schema}".{table}'
        where = (
            f"FROM {name} WHERE topic = %s AND notification_id <= %s"
            f" AND notification_id < (SELECT MAX(notification_id) FROM {name})"
        )
    else:  # the in-memory store (tests): nothing stored to prune
        return 0
    # On SQLite the write lock comes first: the count is then not stale by the delete (another
    # connection's commit in between would make SQLite refuse the delete at once).
    if isinstance(recorder, SQLiteRecorder):
        transaction = sqlite_write(datastore)
    else:
        transaction = datastore.transaction(commit=True)
    with transaction as cursor:
        cursor.execute(f"SELECT COUNT(*) AS n {where}", (_TOPIC, up_to))
        count = int(dict(cursor.fetchone())["n"])
        if count:
            cursor.execute(f"DELETE {where}", (_TOPIC, up_to))
        return count


#: Rows per INSERT statement on SQLite, 4 parameters each: SQLite 3.32 and later allow 32,766
#: parameters a statement, older ones 999.
ROWS_PER_INSERT = 500 if sqlite3.sqlite_version_info >= (3, 32) else 249


@lru_cache(maxsize=64)
def _insert_rows(table: str, rows: int) -> str:
    """``INSERT INTO table VALUES (?,?,?,?), ...`` for ``rows`` rows."""
    return f"INSERT INTO {table} VALUES " + ",".join(["(?,?,?,?)"] * rows)


@lru_cache(maxsize=4096)
def _uuid(hex_id: str) -> UUID:
    """The UUID of an aggregate id as stored (hex); the same aggregate's events come in runs,
    and a UUID is immutable, so one object serves them all."""
    return UUID(hex_id)


def _notification(
    rowid: int, originator_id: UUID, version: int, topic: str, state: bytes
) -> Notification:
    """A ``Notification`` with these fields, without the frozen dataclass's ``__init__`` (five
    ``object.__setattr__`` calls): the relay and the views each build one per event read."""
    notification = object.__new__(Notification)
    vars(notification).update(
        originator_id=originator_id,
        originator_version=version,
        topic=topic,
        state=state,
        id=rowid,
    )
    return notification


class PostgresStore(PostgresFactory):
    """The persistence ``event_store_env`` configures on PostgreSQL: the library's, creating
    each recorder's tables (events, snapshots, tracking, their composite types and function)
    under Baton's schema lock (``postgres_ddl_lock``), so instances and publisher processes
    that start together on an empty database do not race in the catalogue."""

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        with self._creating():
            return super().aggregate_recorder(purpose)

    def application_recorder(self) -> ApplicationRecorder:
        with self._creating():
            return super().application_recorder()

    def tracking_recorder(  # type: ignore[override]
        self, tracking_recorder_class: type[PostgresTrackingRecorder] | None = None
    ) -> PostgresTrackingRecorder:
        with self._creating():
            return super().tracking_recorder(tracking_recorder_class)

    def process_recorder(self) -> ProcessRecorder:
        with self._creating():
            return super().process_recorder()

    def _creating(self) -> AbstractContextManager[None]:
        """The schema lock, when the recorders create their tables (``CREATE_TABLE``)."""
        if not self.env_create_table():
            return nullcontext()
        return postgres_ddl_lock(self.datastore)


class SQLiteLog(SQLiteApplicationRecorder):
    """The application recorder ``event_store_env`` configures on SQLite: the library's, except
    that a transaction's events go in multi-row INSERTs of ``ROWS_PER_INSERT`` rows.

    The library runs an INSERT per event (to learn each one's position), and the sqlite3 module
    lets go of the GIL around every statement and waits to get it back, behind the service's
    event loop for up to a switch interval each time: a group commit of 50 commands (~200 rows)
    spent ~4 ms inserting and committing under load, against ~0.9 ms alone (standalone, 200 rows
    beside a busy thread: 25 ms one by one, 2.7 ms in one statement). Rows are inserted in the
    order given, each taking the largest rowid + 1 (the newest row is never deleted, see
    ``delete_command_records``), so a statement's positions are consecutive up to its last.
    """

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        positions: list[int] = []
        for start in range(0, len(stored_events), ROWS_PER_INSERT):
            chunk = stored_events[start : start + ROWS_PER_INSERT]
            params: list[Any] = []
            for event in chunk:
                originator = event.originator_id
                params += (
                    originator.hex if isinstance(originator, UUID) else originator,
                    event.originator_version,
                    event.topic,
                    event.state,
                )
            c.execute(_insert_rows(self.events_table_name, len(chunk)), params)
            last = int(c.lastrowid)
            positions.extend(range(last - len(chunk) + 1, last + 1))
        return positions

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's query for the relay's and the views' reads (from a position, up to a
        limit), with the same rows built for less: a row read by position rather than by name,
        an aggregate's UUID parsed once for its run of events, and the ``Notification`` filled
        in directly (~3.5 us a row before, read twice per event, by the relay and the views).
        Other shapes of the query take the library's way."""
        if (
            start is None
            or stop is not None
            or topics
            or self.datastore.originator_id_type != "uuid"
        ):
            return super().select_notifications(
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )
        statement = (
            "SELECT rowid, originator_id, originator_version, topic, state "
            f"FROM {self.events_table_name} WHERE rowid{'>=' if inclusive_of_start else '>'}? "
            "ORDER BY rowid LIMIT ?"
        )
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, (start, limit))
            rows = c.fetchall()
        return [_notification(r[0], _uuid(r[1]), r[2], r[3], r[4]) for r in rows]
