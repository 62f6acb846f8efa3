"""Whether this instance makes timed task ids (``BATON_TIMED_IDS``), decided with the store.

A timed task id (``baton.domain.ids``) is found by this release and later ones, not by an
earlier release: sharing the store, one of those cannot end a task queued behind a timed one in
the same session, nor claim across sessions while a timed task has work. So a store says whether
its tasks may be timed: the mark ``timed_ids`` in table ``baton_store_marks`` of the event
store's own database (beside the deployment secret). Left unset, the setting follows the store:

- a store that holds no event and no deployment secret yet is new: no earlier release has
  started on it (every release since stream ids were keyed, 2026-12-01, records the secret as
  it starts, before any task), so it is marked and its ids are timed from the first task on;
- a marked store makes timed ids;
- a store with events or a secret and no mark is one an earlier release started on, which may
  still share it (a rolling upgrade) or come back (a rollback): its ids stay untimed until
  ``BATON_TIMED_IDS=1``, set once no earlier release is left, marks it.

``0`` makes untimed ids whatever the mark says (tasks of both kinds are found either way).
The decision is made as an instance starts, before it records its own secret. The mark stays:
going back to an earlier release needs every timed task ended first; rolling this one out again
after that needs ``0`` until the earlier release is gone (or the mark deleted before the
rollout: ``DELETE FROM baton_store_marks WHERE name = 'timed_ids'``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from baton.adapters.streamids import SECRET_DDL, SECRET_TABLE, store_transaction

log = logging.getLogger(__name__)

MARKS_TABLE = "baton_store_marks"
TIMED_IDS = "timed_ids"

_memory: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_memory_lock = threading.Lock()


def timed_ids(recorder: Any, setting: bool | None) -> bool:
    """Whether new task ids are timed, for ``BATON_TIMED_IDS`` = ``setting`` (None: unset) on
    the store of ``recorder`` (an eventsourcing application recorder); marks the store when the
    answer is yes and it is not marked yet. Safe when several instances start at once."""
    if setting is False:
        return False
    no_events = not recorder.max_notification_id()
    found = store_transaction(recorder)
    if found is None:  # an in-memory store: marked for the life of the recorder
        with _memory_lock:
            if setting or no_events:
                _memory[recorder] = True
            return _memory.get(recorder, False)
    transaction, prefix, mark = found
    table, secrets = prefix + MARKS_TABLE, prefix + SECRET_TABLE
    with transaction as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (name TEXT PRIMARY KEY, marked_at TEXT NOT NULL)"
        )
        cursor.execute(SECRET_DDL.format(secrets))
        cursor.execute(f"SELECT id FROM {secrets} WHERE id = 1")
        started_before = cursor.fetchone() is not None  # by an instance of any release
        if setting or (no_events and not started_before):
            cursor.execute(
                f"INSERT INTO {table} (name, marked_at) VALUES ({mark}, CURRENT_TIMESTAMP) "
                "ON CONFLICT (name) DO NOTHING",
                (TIMED_IDS,),
            )
        cursor.execute(f"SELECT name FROM {table} WHERE name = {mark}", (TIMED_IDS,))
        marked = cursor.fetchone() is not None
    if not marked:
        log.info(
            "task ids stay untimed: an earlier release started on this store and may still share "
            "it, and it cannot work with timed ones; BATON_TIMED_IDS=1 turns them on once none "
            "is left"
        )
    return marked


__all__ = ["MARKS_TABLE", "TIMED_IDS", "timed_ids"]
