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

from typing import Any

from baton.domain.session import CommandRecord

_TOPIC = CommandRecord.Created.TOPIC


def delete_command_records(recorder: Any, up_to: int) -> int:
    """Deletes the command records at or below log position ``up_to``; returns how many."""
    datastore = recorder.datastore
    table = recorder.events_table_name
    module = type(recorder).__module__
    if module.startswith("eventsourcing.sqlite"):
        # SQLite gives a new row the largest rowid + 1: deleting the newest row (after an idle
        # window, usually a command record) would hand its position, which every reader has
        # passed, to the next event, and that event would never be read. The newest row stays.
        where = (
            f"FROM {table} WHERE topic = ? AND rowid <= ?"
            f" AND rowid < (SELECT MAX(rowid) FROM {table})"
        )
    elif module.startswith("eventsourcing.postgres"):
        # A sequence never gives a position twice; the newest row stays here too, so both
        # stores keep the same records.
        name = f'"{datastore.schema}".{table}'
        where = (
            f"FROM {name} WHERE topic = %s AND notification_id <= %s"
            f" AND notification_id < (SELECT MAX(notification_id) FROM {name})"
        )
    else:  # the in-memory store (tests): nothing stored to prune
        return 0
    with datastore.transaction(commit=True) as cursor:
        cursor.execute(f"SELECT COUNT(*) AS n {where}", (_TOPIC, up_to))
        count = int(dict(cursor.fetchone())["n"])
        if count:
            cursor.execute(f"DELETE {where}", (_TOPIC, up_to))
        return count
