"""Retention in the event store: command records outlive their idempotency window only so long.

A command record (the first reply to a command that carried an id) is an aggregate of one event
in the application's log. Past the idempotency window it is deleted: a repeat of its id then
runs as a new command, as a repeat of a JetStream message id does past the stream's duplicate
window. The log is read by position (notification id); deleting old records below every
reader's position leaves a gap no reader waits on.

The window is measured with prune marks (``views.prune_mark``): every sweep records the log's
last position and the time; records at or below the newest mark older than the window go.
"""

from __future__ import annotations

from typing import Any

from baton.domain.session import CommandRecord

_TOPIC = CommandRecord.Created.TOPIC


def delete_command_records(recorder: Any, up_to: int) -> int:
    """Deletes the command records at or below log position ``up_to``; returns how many."""
    datastore = recorder.datastore
    table = recorder.events_table_name
    module = type(recorder).__module__
    if module.startswith("eventsourcing.sqlite"):
        where = f"FROM {table} WHERE topic = ? AND rowid <= ?"
    elif module.startswith("eventsourcing.postgres"):
        where = f'FROM "{datastore.schema}".{table} WHERE topic = %s AND notification_id <= %s'
    else:  # the in-memory store (tests): nothing stored to prune
        return 0
    with datastore.transaction(commit=True) as cursor:
        cursor.execute(f"SELECT COUNT(*) AS n {where}", (_TOPIC, up_to))
        count = int(dict(cursor.fetchone())["n"])
        if count:
            cursor.execute(f"DELETE {where}", (_TOPIC, up_to))
        return count
