"""The read side: views of tasks kept from the application's notification log.

``Projections`` pulls the log in batches (SQLite cannot be subscribed to) and, per batch, writes
the rows it changes and its tracking position in one transaction:

1. lock the meta row (serialises every writer of the views, across processes too) and check the
   generation it started from (a rebuild bumps it, so a batch computed before a rebuild is refused);
2. upsert the rows of every task the batch touched, rendered once from its state at the end of
   the batch, and insert the batch's history entries;
3. record the batch's last notification id with eventsourcing's tracking recorder: a position
   at or below the recorded one raises IntegrityError, the transaction rolls back, and the
   projection re-reads its position and continues (another instance applied that range).

A crash anywhere before the commit loses the whole batch and nothing else; a restart resumes
from ``max_tracking_id``. Task states come from a bounded LRU cache, advanced by each event's
own ``mutate`` when the cached state is at the previous version, else loaded from the store at
the event's version: memory stays bounded and a batch reads each aggregate at most once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Notification, Tracking

from baton.domain import codec
from baton.domain.model import Task
from baton.domain.services import BatonApp
from baton.domain.views import history_entry
from baton.projections import rows
from baton.projections.queries import ViewQueries
from baton.projections.store import VIEW_TABLES, ViewStore, view_store_for

log = logging.getLogger(__name__)

#: Topics of Task events (snapshots are not in the log); other aggregates only move the position.
TASK_TOPIC_PREFIX = Task.TOPIC + "."

# The context column is written on insert and when the context changed (_SET_CONTEXT).
_UPSERT_TASK = """
INSERT INTO {tasks} (task_id, seq, session_id, status, priority, created_at, updated_at,
                     version, has_failed, has_open, header_json, context_json, trigger_json,
                     current_index, summary_json)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET
    session_id = excluded.session_id, status = excluded.status, priority = excluded.priority,
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    version = excluded.version, has_failed = excluded.has_failed, has_open = excluded.has_open,
    header_json = excluded.header_json, trigger_json = excluded.trigger_json,
    current_index = excluded.current_index, summary_json = excluded.summary_json
"""
_SET_CONTEXT = "UPDATE {tasks} SET context_json = ? WHERE task_id = ?"
_UPSERT_STEP = """
INSERT INTO {steps} (task_id, step_index, step_json) VALUES (?, ?, ?)
ON CONFLICT (task_id, step_index) DO UPDATE SET step_json = excluded.step_json
"""
_UPSERT_LEASE = """
INSERT INTO {leases} (step_id, task_id, claim_id, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (step_id) DO UPDATE SET
    claim_id = excluded.claim_id, expires_at = excluded.expires_at
"""
_DELETE_LEASE = "DELETE FROM {leases} WHERE step_id = ?"
_DELETE_LEASES_OF_TASK = "DELETE FROM {leases} WHERE task_id = ?"
_DELETE_READY = "DELETE FROM {ready} WHERE step_id = ?"
_DELETE_READY_OF_TASK = "DELETE FROM {ready} WHERE task_id = ?"
_UPSERT_READY = """
INSERT INTO {ready} (step_id, task_id, session_id, priority, fire_at, created_at, step_index,
                     ready_at, step_json)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (step_id) DO UPDATE SET
    session_id = excluded.session_id, priority = excluded.priority,
    fire_at = excluded.fire_at, created_at = excluded.created_at,
    step_index = excluded.step_index, ready_at = excluded.ready_at,
    step_json = excluded.step_json
"""
_DELETE_TRIGGER = "DELETE FROM {triggers} WHERE task_id = ?"
# ``published`` comes from baton_published_triggers; a concurrent mark of the same trigger
# (already 1 on the row) is never turned back to 0.
_UPSERT_TRIGGER = """
INSERT INTO {triggers} AS t (task_id, trigger_id, session_id, priority, fire_at, trigger_json,
                        published)
VALUES (?, ?, ?, ?, ?, ?,
        CASE WHEN EXISTS (SELECT 1 FROM {published} WHERE trigger_id = ?) THEN 1 ELSE 0 END)
ON CONFLICT (task_id) DO UPDATE SET
    trigger_id = excluded.trigger_id, session_id = excluded.session_id,
    priority = excluded.priority, fire_at = excluded.fire_at,
    trigger_json = excluded.trigger_json,
    published = CASE
        WHEN t.trigger_id = excluded.trigger_id AND t.published = 1 THEN 1
        ELSE excluded.published END
"""
_INSERT_HISTORY = """
INSERT INTO {history} (task_id, version, entry_json) VALUES (?, ?, ?)
ON CONFLICT (task_id, version) DO NOTHING
"""


class _Retry(Exception):
    """A batch lost a race (another writer or a rebuild moved the position): read it again."""


class _Batch:
    """What one batch of notifications changes."""

    def __init__(self, shared: bool = True) -> None:
        self.tasks: dict[UUID, Task] = {}
        self.seqs: dict[UUID, int] = {}
        self.history: list[tuple[str, int, str]] = []
        #: Whether the events' decodings and history entries come from (and go into) the
        #: application's caches the relay shares; a rebuild leaves them to the relay.
        self.shared = shared


class Projections(ViewQueries):
    """The views the contract's queries need, kept in the events' store.

    ``catch_up()`` applies what is stored now (cheap when nothing is new); ``run()`` does so
    in a loop for a background thread. Queries read the views only (history at a version
    reconstructs the task from the store). Every method is synchronous and thread-safe.
    """

    def __init__(
        self,
        app: BatonApp,
        *,
        views_path: str | Path | None = None,
        batch_size: int = 500,
        cache_size: int = 2000,
        rebuild_batch_size: int = 5000,
    ) -> None:
        """Opens (and creates) the views beside ``app``'s events: ``<events dir>/views.sqlite``
        on SQLite (or ``views_path``), ``baton_*`` tables in the same database and schema on
        PostgreSQL."""
        if batch_size < 1 or cache_size < 1 or rebuild_batch_size < 1:
            raise ValueError("batch_size, cache_size and rebuild_batch_size must be positive")
        self.app = app
        self.batch_size = batch_size
        self.rebuild_batch_size = rebuild_batch_size
        """A rebuild reads bigger batches: each task's rows are rendered and written once per
        batch, so the fewer batches a task's events span, the less rendering."""
        self.cache_size = cache_size
        self.store: ViewStore = view_store_for(app.recorder, views_path)
        self.store.create_tables()
        self.tracking_name = app.name
        self._lock = threading.RLock()
        self._states: OrderedDict[UUID, Task] = OrderedDict()
        self._applied = self._position()[1]
        self._wakeup = threading.Event()

    def close(self) -> None:
        """Releases the views' own connections (the application's stay open)."""
        self.store.close()

    # -- keeping up ------------------------------------------------------------------------
    def catch_up(self) -> int:
        """Applies every event stored now, in batches; returns how many notifications.

        What is stored is read before taking the lock: a caller that waited for another
        thread's catch-up returns at once when that one applied everything it needs."""
        stored = self.app.recorder.max_notification_id() or 0
        if stored <= self._applied:
            return 0
        with self._lock:
            if stored <= self._applied:
                return 0
            return self._apply_until(stored)

    def wake(self) -> None:
        """Makes ``run`` catch up now rather than at the end of its interval (any thread; the
        PostgreSQL store listener calls it when another instance committed events)."""
        self._wakeup.set()

    def run(self, stop: threading.Event, interval: float = 0.05) -> None:
        """Catches up every ``interval`` seconds, or when woken, until ``stop`` is set (a
        thread's target; call ``wake()`` after setting ``stop`` to end it at once)."""
        delay = interval
        while not stop.is_set():
            try:
                self.catch_up()
                delay = interval
            except Exception:
                log.exception("projections: catching up failed; retrying")
                delay = min(max(delay * 2, interval), 5.0)
            self._wakeup.wait(delay)
            self._wakeup.clear()

    def rebuild(self) -> int:
        """Clears the views (not the published-trigger marks), resets the position and
        replays every event; returns how many notifications it applied."""
        with self._lock:
            with self.store.write() as cursor:
                self.store.lock_meta(cursor)
                cursor.execute(
                    self.store.sql("UPDATE {meta} SET generation = generation + 1 WHERE id = 1")
                )
                for table in VIEW_TABLES:
                    cursor.execute(self.store.sql(f"DELETE FROM {{{table}}}"))
                self.store.delete_tracking(cursor, self.tracking_name)
            self._states.clear()
            self._applied = 0
            # Old events nobody else is decoding now: no use sharing them (app.decoded).
            return self._apply_until(None, self.rebuild_batch_size, shared=False)

    def lag(self) -> dict[str, int]:
        """``{applied, stored, behind}``: the last notification applied and the last stored."""
        applied = self._position()[1]
        stored = self.app.recorder.max_notification_id() or 0
        return {"applied": applied, "stored": stored, "behind": max(0, stored - applied)}

    def _position(self) -> tuple[int, int]:
        """The views' generation and tracked position, read in that order."""
        with self.store.read() as cursor:
            cursor.execute(self.store.sql("SELECT generation FROM {meta} WHERE id = 1"))
            generation = int(cursor.fetchone()["generation"])
            position = self.store.max_tracking_id(cursor, self.tracking_name) or 0
        return generation, position

    def _apply_until(
        self, stored: int | None, batch_size: int | None = None, shared: bool = True
    ) -> int:
        total = 0
        while stored is None or self._applied < stored:
            try:
                applied = self._apply_batch(batch_size or self.batch_size, shared)
            except _Retry:
                continue
            if applied == 0:
                break
            total += applied
        return total

    def _apply_batch(self, batch_size: int, shared: bool = True) -> int:
        generation, position = self._position()
        self._applied = position
        notifications = self.app.recorder.select_notifications(
            start=position, limit=batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        batch = self._compute(notifications) if shared else self._compute(notifications, False)
        last = notifications[-1].id
        try:
            with self.store.write() as cursor:
                self.store.lock_meta(cursor)
                cursor.execute(self.store.sql("SELECT generation FROM {meta} WHERE id = 1"))
                if int(cursor.fetchone()["generation"]) != generation:
                    raise IntegrityError("the views were rebuilt meanwhile")
                self._write(cursor, batch)
                self._record_position(cursor, last)
        except IntegrityError:
            if self._position() == (generation, position):
                raise  # not a lost race: a real constraint violation
            raise _Retry from None
        self._applied = last
        return len(notifications)

    def _record_position(self, cursor: Any, position: int) -> None:
        """Tracks ``position`` in the batch's transaction (raises if already recorded)."""
        self.store.insert_tracking(cursor, Tracking(self.tracking_name, position))

    # -- computing a batch -------------------------------------------------------------------
    def _compute(self, notifications: list[Notification] | Any, shared: bool = True) -> _Batch:
        batch = _Batch(shared)
        decoded = self.app.decoded if shared else self.app.mapper.to_domain_event
        for notification in notifications:
            if not notification.topic.startswith(TASK_TOPIC_PREFIX):
                continue
            aggregate_id = notification.originator_id
            assert isinstance(aggregate_id, UUID)
            event = decoded(notification)
            state = self._advance(aggregate_id, event, batch)
            batch.tasks[aggregate_id] = state
            batch.seqs.setdefault(aggregate_id, notification.id)
        return batch

    def _advance(self, aggregate_id: UUID, event: Any, batch: _Batch) -> Task:
        """The task's state after ``event``, recording its history entry on the way."""
        version = event.originator_version
        previous = self._states.pop(aggregate_id, None)
        if previous is None:  # evicted by this (big) batch's other tasks
            previous = batch.tasks.get(aggregate_id)
        state: Task | None = None
        if isinstance(event, Task.Created):
            # The entry is rendered before mutate: the new state shares the event's dicts.
            batch.history.append(self._entry(event.task_id, event, batch))
            state = event.mutate(None)
        elif previous is not None and previous.version == version - 1:
            batch.history.append(self._entry(previous.task_id, event, batch))
            try:
                state = event.mutate(previous)
            except Exception:
                log.exception("projections: replaying %r failed; reloading", event)
                state = None
            if state is None:
                state = self._load(aggregate_id, version)
        else:
            state = self._load(aggregate_id, version)
            batch.history.append(self._entry(state.task_id, event, batch))
        assert state is not None
        self._states[aggregate_id] = state
        while len(self._states) > self.cache_size:
            self._states.popitem(last=False)
        return state

    def _entry(self, task_id: str, event: Any, batch: _Batch) -> tuple[str, int, str]:
        if batch.shared:
            entry = self.app.history_json(task_id, event).decode()
        else:
            entry = rows.dumps(history_entry(task_id, event))
        return (task_id, event.originator_version, entry)

    def _load(self, aggregate_id: UUID, version: int) -> Task:
        task: Any = self.app.repository.get(aggregate_id, version=version)
        if not isinstance(task, Task) or task.version != version:
            raise RuntimeError(f"cannot load task {aggregate_id} at version {version}")
        return task

    def _write(self, cursor: Any, batch: _Batch) -> None:
        """Writes what the batch changed: each task's header row, the rows of the steps its
        events changed (every step for a task new to this cache), their queue rows, its
        trigger, and the history entries."""
        sql = self.store.sql
        task_rows: list[tuple[Any, ...]] = []
        contexts: list[tuple[str, str]] = []
        steps: list[tuple[str, int, str]] = []
        ready: list[tuple[Any, ...]] = []
        unready: list[tuple[str]] = []
        whole: list[tuple[str]] = []
        triggers: list[tuple[Any, ...]] = []
        no_trigger: list[tuple[str]] = []
        leases: list[tuple[Any, ...]] = []
        no_lease: list[tuple[str]] = []
        for aggregate_id, task in batch.tasks.items():
            changed, context_changed = task.take_changes()
            context_json = rows.dumps(task.context) if context_changed or changed is None else ""
            task_rows.append(rows.task_row(task, batch.seqs[aggregate_id], context_json or "{}"))
            if context_json:  # an existing row keeps its context on upsert
                contexts.append((context_json, task.task_id))
            if changed is None:
                whole.append((task.task_id,))
                indexes: Any = range(len(task.steps))
            else:
                indexes = sorted(changed)
            for index in indexes:
                step = task.steps[index]
                rendered = rows.step_json(task, step)
                steps.append((task.task_id, index, rendered))
                if rows.claimable(task, step):
                    ready.append(rows.ready_row(task, step, rendered))
                elif changed is not None:
                    unready.append((step.step_id,))
                lease = rows.lease_row(task, step)
                if lease is not None:
                    leases.append(lease)
                elif changed is not None:
                    no_lease.append((step.step_id,))
            trigger = rows.trigger_row(task)
            if trigger is None:
                no_trigger.append((task.task_id,))
            else:
                triggers.append((*trigger, trigger[1]))
        # In this order: deletions of a task rewritten whole come before its new rows.
        for statement, values in (
            (_UPSERT_TASK, task_rows),
            (_SET_CONTEXT, contexts),
            (_DELETE_READY_OF_TASK, whole),
            (_DELETE_LEASES_OF_TASK, whole),
            (_DELETE_LEASE, no_lease),
            (_UPSERT_LEASE, leases),
            (_DELETE_READY, unready),
            (_UPSERT_STEP, steps),
            (_UPSERT_READY, ready),
            (_DELETE_TRIGGER, no_trigger),
            (_UPSERT_TRIGGER, triggers),
            (_INSERT_HISTORY, batch.history),
        ):
            if values:
                cursor.executemany(sql(statement), values)


def _loads(text: str) -> Any:  # the views hold JSON objects
    return codec.loads(text)
