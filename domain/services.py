"""The application service: every command of the contract, each with one handler.

A command loads the aggregates it touches into a unit of work, validates, triggers events, and
all of them are written in one ``save(...)`` (one transaction), together with the reply when the
command carried an id. A concurrent change to the same aggregate raises IntegrityError on save;
the command is then re-run on fresh state, or reported as a 409 after too many attempts. A
rejected command raises before anything is saved, so it appends nothing.

The service is synchronous (eventsourcing is): adapters call it from worker threads.

Why one module of this size: the unit of work, the group commit, idempotency and the size checks
are one transaction's rules and read each other's state; the handlers are in handlers.py.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from threading import Lock, RLock
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

import orjson
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    ProcessingEvent,
)
from eventsourcing.domain import Aggregate, datetime_now_with_tzinfo
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Notification,
    OperationalError,
    PersistenceError,
    Recording,
    StoredEvent,
    Transcoding,
)
from eventsourcing.utils import get_topic

from baton.domain import commands as c
from baton.domain import ids
from baton.domain.codec import OrjsonTranscoder, dumps_bytes
from baton.domain.errors import (
    BatonError,
    CommandIdReused,
    ConcurrentChange,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    StoreUnavailable,
    TooLarge,
)
from baton.domain.handlers import HANDLERS
from baton.domain.limits import MESSAGE_HEADROOM
from baton.domain.model import CommandRecord, Session, Step, Task
from baton.domain.views import history_entry, task_view

Reply = Any
A = TypeVar("A", bound=Aggregate)
_RECORD_TOPIC = get_topic(CommandRecord.Created)
_RECORD_AGGREGATE_TOPIC = get_topic(CommandRecord)


def _prestored(prestored: dict[int, StoredEvent], event: Any) -> StoredEvent | None:
    """The stored form of ``event`` made by the size checks, if it is that event's (same
    aggregate, same version)."""
    record = prestored.get(id(event))
    if (
        record is None
        or record.originator_version != event.originator_version
        or record.originator_id != event.originator_id
    ):
        return None
    return record


class Workspace(Protocol):
    """Per-task working directories (an adapter provides the real one)."""

    def path_for(self, task_id: str) -> str: ...

    def create(self, task_id: str) -> None: ...

    def release(self, task_id: str, status: str) -> None: ...


class ReadyWork(Protocol):
    """What is claimable across sessions (a projection provides it)."""

    def candidate_tasks(self, session_id: str | None, limit: int) -> list[str]:
        """Task ids holding ready or current-unclaimed steps, most urgent first."""
        ...

    def idle_status(self, session_id: str | None) -> str:
        """``blocked``, ``failed`` or ``done`` for a scope with nothing to hand out."""
        ...


class StepAsDict(Transcoding):
    type = Step
    name = "baton_step"

    def encode(self, obj: Step) -> dict[str, Any]:
        return obj.as_dict()

    def decode(self, data: dict[str, Any]) -> Step:
        return Step.from_dict(data)


class UnitOfWork:
    """The aggregates one command reads and changes, and what to do once they are saved."""

    def __init__(self, app: BatonApp, staged: dict[UUID, Aggregate] | None = None) -> None:
        self.app = app
        self.now = app.clock()
        self.staged = staged if staged is not None else {}
        self.loaded: dict[UUID, Aggregate] = {}
        #: How many pending events each aggregate had when this command loaded it.
        self.marks: dict[UUID, int] = {}
        self.after_commit: list[Callable[[], None]] = []

    def _get(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        if aggregate_id in self.loaded:
            return self.loaded[aggregate_id]  # type: ignore[return-value]
        aggregate: Aggregate | None = self.staged.get(aggregate_id)
        if aggregate is None:
            # The cached aggregate itself, not a copy: commands change it in place under the
            # writer's lock, and one that fails after changing it makes the group start over.
            try:
                with self.app.store_errors():
                    aggregate = self.app.repository.get(aggregate_id, deepcopy_from_cache=False)
            except AggregateNotFoundError:
                return None
        if not isinstance(aggregate, kind):
            return None
        self.loaded[aggregate_id] = aggregate
        self.marks[aggregate_id] = len(aggregate.pending_events)
        return aggregate

    def touched(self) -> bool:
        """Whether this command changed any loaded aggregate (it triggered an event)."""
        return any(len(a.pending_events) != self.marks.get(i, 0) for i, a in self.loaded.items())

    def task(self, task_id: str) -> Task:
        task = self._get(ids.task_uuid(task_id), Task)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    def session(self, session_id: str) -> Session | None:
        return self._get(ids.session_uuid(session_id), Session)

    def add(self, aggregate: Aggregate) -> None:
        self.loaded[aggregate.id] = aggregate
        self.marks[aggregate.id] = 0

    def changed(self) -> list[Aggregate]:
        return [a for a in self.loaded.values() if a.pending_events]


class NewestVersionCache(LRUCache[UUID, Any]):
    """The aggregate cache, except that an older version never replaces a newer one.

    The library puts an aggregate in the cache after its save commits, outside any lock, so
    two threads that saved versions 6 and 7 may put them in either order. With version 6 left
    in the cache, a command that only reads (a claim finding nothing) answers from stale state
    for ever, since only a conflicting save evicts it.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._put_lock = Lock()

    def put(self, key: UUID, value: Any) -> Any | None:
        with self._put_lock:
            try:
                cached = self.get(key)
            except KeyError:
                cached = None
            if cached is not None and value is not None and cached.version > value.version:
                return None
            return super().put(key, value)


def _retry_delay(attempt: int) -> float:
    return float(min(0.05, 0.001 * (2**attempt)) * random.random())


class BatonApp(Application[UUID]):
    """Baton's application service over an event store configured from the environment."""

    name = "Baton"
    env: ClassVar[dict[str, str]] = {
        "AGGREGATE_CACHE_MAXSIZE": "5000",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
    }
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Task: 100, Session: 200}
    max_attempts: int = 50

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        workspace: Workspace | None = None,
        ready_work: ReadyWork | None = None,
        clock: Callable[[], float] = time.time,
        default_lease_s: float = 300.0,
        max_message_bytes: int | None = None,
        timed_ids: bool = False,
    ) -> None:
        super().__init__(env)
        cache = self.repository.cache
        if isinstance(cache, LRUCache) and not self.repository.fastforward:
            self.repository.cache = NewestVersionCache(cache.maxsize)
        self.workspace = workspace
        self.ready_work = ready_work
        self.clock = clock
        #: A claim's lease when the claim names none (BATON_CLAIM_LEASE_S).
        self.default_lease_s = default_lease_s
        #: The NATS server's ``max_payload``: every event, reply and progress message of an
        #: accepted command must fit in it (None: not connected, no limit checked).
        self.max_message_bytes = max_message_bytes
        #: New task ids carry their creation time, so their events are stored in time order
        #: (``ids``). Off unless asked: ``baton serve`` decides it with the store
        #: (``adapters/timedids.py``), off where an earlier release, which cannot work with
        #: timed tasks, may share it.
        self.timed_ids = timed_ids
        #: Commands change cached aggregates in place under this lock; readers copy under it.
        self.write_lock = RLock()
        self._decoded: dict[int, Any] = {}
        self._history_json: dict[tuple[UUID, int], bytes] = {}
        self._decoded_lock = Lock()

    def save(
        self,
        *objs: Any,
        records: Sequence[StoredEvent] = (),
        recordings: bool = True,
        prestored: dict[int, StoredEvent] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``Application.save``, without its runtime Protocol checks for plain aggregates, and
        with ``records``: command records already in their stored form, written in the same
        transaction (see ``_stored_record``).

        ``ProcessingEvent.collect_events`` asks ``isinstance(obj, DomainEventProtocol)`` of
        every aggregate, a runtime-checkable Protocol walked attribute by attribute: ~3% of a
        command's CPU time in the service. The steps below are the library's own (9.5).

        ``recordings=False`` (the group commit) returns no recordings and notifies nothing: a
        ``Notification`` and a ``Recording`` per event, frozen dataclasses built field by
        field, were ~6% of the writer's time, for a list nobody read (``_notify`` is the
        library's no-op here, and the relay and the views read the log from the store).

        ``prestored`` holds events already in their stored form (by ``id`` of the event, from
        the size checks), so no event is encoded twice.
        """
        if kwargs or not all(isinstance(obj, Aggregate) for obj in objs):
            assert not records, "command records go with aggregates only"
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in objs:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        saved = self._record(processing_event, records, recordings=recordings, prestored=prestored)
        self._take_snapshots(processing_event)
        if recordings:
            self._notify(saved)
            self.notify(processing_event.events)  # deprecated, a no-op unless overridden
        return saved

    def _record(
        self,
        processing_event: ProcessingEvent[UUID],
        records: Sequence[StoredEvent] = (),
        *,
        recordings: bool = True,
        prestored: dict[int, StoredEvent] | None = None,
    ) -> list[Recording[UUID]]:
        """The library's ``_record``, with the stored command records appended to the same
        ``insert_events`` (one transaction). The records are not aggregates anyone loads, so
        they are not put in the aggregate cache either (where they would push tasks out). A
        save with tracking or recorder arguments (none in Baton today) takes the library's
        way."""
        if processing_event.tracking is not None or processing_event.saved_kwargs:
            assert not records, "command records go with plain saves only"
            return super()._record(processing_event)
        events = processing_event.events
        to_stored = self.mapper.to_stored_event
        kept = prestored or {}
        stored = [_prestored(kept, event) or to_stored(event) for event in events]
        stored.extend(records)
        positions = self.recorder.insert_events(stored)
        saved: list[Recording[UUID]] = []
        if positions and recordings:
            for event, record, position in zip(events, stored, positions, strict=False):
                notification = Notification(
                    originator_id=record.originator_id,
                    originator_version=record.originator_version,
                    topic=record.topic,
                    state=record.state,
                    id=position,
                )
                saved.append(Recording(event, notification))
        cache = self.repository.cache
        if cache is not None and not self.repository.fastforward:
            for aggregate_id, aggregate in processing_event.aggregates.items():
                cache.put(aggregate_id, aggregate)
        return saved

    def _stored_record(
        self, command_id: str, kind: str, reply: Reply, encoded: bytes | None
    ) -> StoredEvent:
        """A command record's one event (``CommandRecord.Created``), in its stored form.

        The reply was encoded once already, to check its size: it goes into the record as
        those bytes (an ``orjson.Fragment``) rather than being encoded again through a whole
        aggregate. The result is the same stored JSON the library writes, and reads back as a
        ``CommandRecord.Created``. A reply that is not plain JSON, or a store with a cipher or
        compressor, takes the library's way."""
        mapper = self.mapper
        if encoded is None or mapper.cipher is not None or mapper.compressor is not None:
            event = CommandRecord.create(command_id, kind, reply).collect_events()[0]
            return mapper.to_stored_event(event)
        state = {
            "timestamp": datetime_now_with_tzinfo(),
            "originator_topic": _RECORD_AGGREGATE_TOPIC,
            "command_id": command_id,
            "subject": kind,
            "reply": orjson.Fragment(encoded),
        }
        return StoredEvent(
            originator_id=ids.command_uuid(command_id),
            originator_version=1,
            topic=_RECORD_TOPIC,
            state=mapper.transcoder.encode(state),
        )

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """Snapshots the saved aggregates themselves when their save crossed an interval.

        The library reconstructs each aggregate from the store to snapshot it: for a task of
        1,000 steps that was most of a command's time. The aggregates here are the ones just
        saved (the writer's lock is held), at a version that is stored: a snapshot of any
        stored version is as good as one of the interval's."""
        if not self.snapshots or not self.snapshotting_intervals:
            return
        crossed: set[UUID] = set()
        for event in processing_event.events:
            aggregate = processing_event.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is not None and isinstance(aggregate, Task):
                # A snapshot writes every step: once per as many events as there are steps
                # (in hundreds) keeps its cost per event flat in the plan's size.
                interval *= max(1, -(-len(aggregate.steps) // interval))
            if interval is not None and event.originator_version % interval == 0:
                crossed.add(event.originator_id)
        for aggregate_id in crossed:
            aggregate = processing_event.aggregates[aggregate_id]
            snapshot = type(aggregate).Snapshot.take(aggregate)  # type: ignore[attr-defined]
            self.snapshots.put([snapshot])

    #: How many recently decoded notifications ``decoded`` keeps.
    decoded_cache_size: ClassVar[int] = 4096

    def decoded(self, notification: Notification) -> Any:
        """The domain event of a notification of this application's log.

        The progress relay and the projections both read every notification, usually within
        milliseconds of each other: the one that comes second takes the event the first one
        decoded. The events are only read (their ``mutate`` and history entries copy what they
        keep), so sharing them is safe.
        """
        key = notification.id
        event = self._decoded.get(key)
        if event is None:
            event = self.mapper.to_domain_event(notification)
            self._keep(self._decoded, key, event)
        return event

    def history_json(self, task_id: str, event: Any) -> bytes:
        """The JSON of ``event``'s history entry: what the history view stores and what the
        progress stream carries for it. Shared like ``decoded``: the relay and the projections
        each need it, for the same events at about the same time."""
        key = (event.originator_id, event.originator_version)
        data = self._history_json.get(key)
        if data is None:
            data = dumps_bytes(history_entry(task_id, event))
            self._keep(self._history_json, key, data)
        return data

    def _keep(self, cache: dict[Any, Any], key: Any, value: Any) -> None:
        """Puts ``value`` in one of the shared caches, dropping its oldest quarter when full."""
        with self._decoded_lock:
            cache[key] = value
            if len(cache) > self.decoded_cache_size:
                for oldest in list(cache)[: len(cache) // 4]:
                    del cache[oldest]

    def construct_transcoder(self) -> JSONTranscoder:
        """eventsourcing's JSON transcoder on orjson (the same stored JSON, several times
        faster: a 1,000-step snapshot or Created event was milliseconds of json)."""
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(StepAsDict())

    # -- the command table --------------------------------------------------------------
    def handle(self, command: c.Command, *, command_id: str | None = None) -> Reply:
        """Executes ``command`` once; a repeat of ``command_id`` gets the first reply."""
        result = self.handle_batch([(command, command_id)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def handle_batch(
        self, requests: Sequence[tuple[c.Command, str | None]]
    ) -> list[Reply | BaseException]:
        """Executes commands that arrived together as one group commit.

        Each command is validated and applied in turn on the state the earlier ones left (a
        rejected one changes nothing and gets its error); all their events are written in one
        transaction, and a reply means that transaction committed. When the group meets a
        concurrent change, or a command fails after changing an aggregate, each command is
        re-run alone on fresh state.
        """
        with self.write_lock:
            results = self._try_group(requests, look_up=False)
            if results is None:
                results = [self._handle_alone(command, cid) for command, cid in requests]
        return [
            self._settle(r, command, cid)
            for r, (command, cid) in zip(results, requests, strict=True)
        ]

    def _settle(self, result: Reply | BaseException, command: c.Command, cid: str | None) -> Any:
        """An error for a command with an id, when a concurrent repeat of it (another
        instance, another thread) has committed meanwhile, becomes that repeat's reply."""
        cid = cid or command.command_id
        if cid and isinstance(result, BatonError) and not isinstance(result, CommandIdReused):
            with suppress(BatonError):
                record = self._record_of(cid)
                if record is not None:
                    return self._replay(record, command, cid)
        return result

    def _handle_alone(self, command: c.Command, command_id: str | None) -> Reply | BaseException:
        for attempt in range(self.max_attempts):
            results = self._try_group([(command, command_id)])
            if results is not None:
                return results[0]
            time.sleep(_retry_delay(attempt))
        return ConcurrentChange(
            f"{type(command).__name__} kept meeting concurrent changes; nothing was applied"
        )

    def _replay(self, record: CommandRecord, command: c.Command, cid: str) -> Reply:
        kind = type(command).__name__
        used_for = LEGACY_KINDS.get(record.subject, record.subject)
        if used_for != kind:
            raise CommandIdReused(
                f"command id {cid!r} was already used for {used_for}, not {kind}",
                details={"command_id": cid, "used_for": used_for},
            )
        return record.reply

    def _try_group(
        self, requests: Sequence[tuple[c.Command, str | None]], *, look_up: bool = True
    ) -> list[Reply | BaseException] | None:
        """One attempt at a group; None when it must be re-run command by command.

        A group runs optimistically: it does not look each command id up first (a store read
        per command, 13% of a command's CPU when every client sends ids). A repeat of an id
        already recorded cannot commit, since its record conflicts with the stored one: the
        group meets an IntegrityError and is re-run command by command, looking ids up
        (``look_up``), so the repeat answers the first reply and nothing is applied twice. A
        repeat refused by its own rules first (a step already completed) is answered the same
        way by ``_settle``."""
        results: list[Reply | BaseException] = []
        staged: dict[UUID, Aggregate] = {}
        replies: dict[str, tuple[str, Reply]] = {}
        records: list[StoredEvent] = []
        prestored: dict[int, StoredEvent] = {}
        hooks: list[Callable[[], None]] = []
        touched: set[UUID] = set()
        for command, command_id in requests:
            cid = command_id or command.command_id
            uow: UnitOfWork | None = None
            try:
                if cid and cid in replies:
                    kind, reply = replies[cid]
                    if kind != type(command).__name__:
                        raise CommandIdReused(
                            f"command id {cid!r} was already used for {kind}",
                            details={"command_id": cid, "used_for": kind},
                        )
                    results.append(reply)
                    continue
                record = self._record_of(cid) if cid and look_up else None
                if record is not None:
                    results.append(self._replay(record, command, cid or ""))
                    continue
                handler = HANDLERS.get(type(command))
                if handler is None:
                    raise InvalidRequest(f"unknown command {type(command).__name__}")
                uow = UnitOfWork(self, staged)
                reply = handler(self, uow, command)
                encoded = self._check_sizes(uow, reply, prestored)
                kind = type(command).__name__
                stored = self._stored_record(cid, kind, reply, encoded) if cid else None
            except Exception as error:
                if uow is not None and uow.touched():
                    # It changed live aggregates before failing: start over, one by one.
                    self._forget(touched | set(uow.loaded))
                    if len(requests) == 1:
                        return [error]
                    return None
                results.append(error)  # a BatonError, or a bug: this command fails alone
                continue
            touched.update(uow.loaded)
            staged.update({a.id: a for a in uow.changed()})
            if cid and stored is not None:
                records.append(stored)
                replies[cid] = (kind, reply)
            hooks.extend(uow.after_commit)
            results.append(reply)
        if staged or records:
            try:
                with self.store_errors():
                    self.save(
                        *staged.values(), records=records, recordings=False, prestored=prestored
                    )
            except IntegrityError:
                self._forget(touched)
                return None
            except StoreUnavailable as error:
                self._forget(touched)
                return [r if isinstance(r, BaseException) else error for r in results]
        for hook in hooks:
            hook()
        return results

    @property
    def message_limit(self) -> int | None:
        """The largest event, reply or progress message an accepted command may produce."""
        if self.max_message_bytes is None:
            return None
        return max(1024, self.max_message_bytes - MESSAGE_HEADROOM)

    def _check_sizes(
        self, uow: UnitOfWork, reply: Reply, prestored: dict[int, StoredEvent] | None = None
    ) -> bytes | None:
        """Refuses (413, before anything is saved) a command whose reply, or one of whose
        events (each becomes a progress message), would not fit in a NATS message.

        Returns the reply as JSON (None when it is not plain JSON: a datetime, say, which the
        event store's transcoder stores in a form of its own), which its command record stores
        as it is. Each event is measured in its stored form, which goes into ``prestored`` (by
        the event's ``id``) for the save to write as it is: one encoding per event."""
        try:
            encoded: bytes | None = orjson.dumps(reply, option=orjson.OPT_PASSTHROUGH_DATETIME)
        except TypeError:
            encoded = None
        limit = self.message_limit
        if limit is None:
            return encoded
        reply_size = len(encoded if encoded is not None else dumps_bytes(reply, default=str))
        if reply_size > limit:
            raise TooLarge(
                f"the reply would be {reply_size} bytes, over the {limit} a message may carry",
                details={"bytes": reply_size, "limit": limit},
            )
        for aggregate in uow.loaded.values():
            added = 0
            for event in aggregate.pending_events[uow.marks.get(aggregate.id, 0) :]:
                size = self._event_size(event, prestored)
                if size > limit:
                    raise TooLarge(
                        f"the command would record a {type(event).__name__} event of {size} "
                        f"bytes, over the {limit} a progress message may carry",
                        details={"bytes": size, "limit": limit},
                    )
                if isinstance(aggregate, Task) and isinstance(event, Task.StepCompleted):
                    step = aggregate.step(event.step_id)
                    size *= 1 + len(aggregate.dependents_of(step.step_name))  # their contexts
                added += size
            if isinstance(aggregate, Task) and added:
                self._check_view_size(aggregate, added, reply, reply_size, limit)
        return encoded

    #: What an event's fields hold beyond its stored state, as JSON: the aggregate's id (key,
    #: quoted value and comma, 55 bytes) and the version's key (22 bytes, its digits apart),
    #: less what the stored form adds around the timestamp (35 bytes of
    #: ``{"_type_":"datetime_iso","_data_":...}``). With it, the size is the one measured
    #: before each event was encoded only once, ``len(json(vars(event)))``, to the byte (a unit
    #: test holds them equal).
    _UNSTORED_FIELDS = 55 + 22 - 35

    def _event_size(self, event: Any, prestored: dict[int, StoredEvent] | None) -> int:
        """An event's fields as JSON, in bytes: from its stored state (kept in ``prestored``
        for the save), or, when the store compresses or encrypts (the stored size is not the
        JSON's), from its fields encoded here."""
        mapper = self.mapper
        if prestored is None or mapper.cipher is not None or mapper.compressor is not None:
            return len(dumps_bytes(vars(event), default=str))
        record = mapper.to_stored_event(event)
        prestored[id(event)] = record
        return len(record.state) + self._UNSTORED_FIELDS + len(str(event.originator_version))

    @staticmethod
    def _check_view_size(task: Task, added: int, reply: Reply, reply_size: int, limit: int) -> None:
        """Refuses a change after which the task's view (a query's reply) would not fit: an
        upper bound is kept per task, grown by each event's size (a completed step's result
        once more for each dependent, whose context shows it), and the view is measured
        exactly only when the bound passes the limit."""
        if isinstance(reply, dict) and reply.get("task_id") == task.task_id and "steps" in reply:
            task._view_bytes = reply_size  # the reply is the view
            return
        if task._view_bytes is None:
            task._view_bytes = len(dumps_bytes(task_view(task), default=str))
        else:
            task._view_bytes += added
        if task._view_bytes > limit:
            size = len(dumps_bytes(task_view(task), default=str))
            task._view_bytes = size
            if size > limit:
                raise TooLarge(
                    f"the task's view would be {size} bytes, over the {limit} a reply may carry",
                    details={"bytes": size, "limit": limit, "task_id": task.task_id},
                )

    @contextmanager
    def store_errors(self) -> Iterator[None]:
        """Turns the store's operational failures into a clear 503; conflicts pass through."""
        try:
            yield
        except IntegrityError:
            raise
        except (OperationalError, PersistenceError) as error:
            raise StoreUnavailable(f"the event store failed: {error}") from error

    def _forget(self, aggregate_ids: set[UUID]) -> None:
        """After a conflict: replaces the cached aggregates with their stored state (rather
        than only evicting them, so a slower thread's late put of an older version is refused)."""
        cache = self.repository.cache
        if cache is None:
            return
        for aggregate_id in aggregate_ids:
            with suppress(KeyError):
                cache.get(aggregate_id, evict=True)
            with suppress(AggregateNotFoundError, StoreUnavailable), self.store_errors():
                self.repository.get(aggregate_id, deepcopy_from_cache=False)

    def reply_for(self, command_id: str) -> Reply | None:
        """The stored first reply of an applied command id, or None."""
        record = self._record_of(command_id)
        return None if record is None else record.reply

    def _record_of(self, command_id: str) -> CommandRecord | None:
        """The stored record of ``command_id``, read from the store (never cached: a record
        pruned after the idempotency window must be gone)."""
        with self.store_errors():
            events = list(self.events.get(ids.command_uuid(command_id), limit=1))
        if not events or not isinstance(events[0], CommandRecord.Created):
            return None
        record = events[0].mutate(None)
        return record if isinstance(record, CommandRecord) else None

    # -- reading (the projections answer users; these serve tests and the planner) -------
    def get_task(self, task_id: str, version: int | None = None) -> Task:
        """A copy of the task (its live state belongs to the writer), or as at ``version``."""
        try:
            with self.store_errors(), self.write_lock:
                task: Aggregate = self.repository.get(ids.task_uuid(task_id), version=version)
        except AggregateNotFoundError:
            raise NotFound(f"no task {task_id!r}") from None
        if not isinstance(task, Task):
            raise NotFound(f"no task {task_id!r}")
        if version is not None and task.version != version:
            raise NotFound(f"task {task_id!r} has no version {version}")
        return task

    def task_view(self, task_id: str, version: int | None = None) -> dict[str, Any]:
        return task_view(self.get_task(task_id, version), self.clock())

    def history(self, task_id: str) -> list[dict[str, Any]]:
        self.get_task(task_id)
        return [
            history_entry(task_id, e)  # type: ignore[arg-type]
            for e in self.events.get(ids.task_uuid(task_id))
        ]

    def session_state(self, session_id: str) -> Session | None:
        try:
            with self.write_lock:
                session: Aggregate = self.repository.get(ids.session_uuid(session_id))
        except AggregateNotFoundError:
            return None
        return session if isinstance(session, Session) else None


#: The subjects 0.1 stored in command records, by the command they name.
LEGACY_KINDS: dict[str, str] = {
    "task.create": "CreateTask",
    "task.start": "StartTask",
    "task.next": "NextStep",
    "task.replan": "ReplanTask",
    "task.complete": "CompleteTask",
    "task.fail": "FailTask",
    "task.cancel": "CancelTask",
    "task.context": "AddContext",
    "step.claim": "ClaimStep",
    "step.complete": "CompleteStep",
    "step.fail": "FailStep",
    "step.skip": "SkipStep",
    "step.retry": "RetryStep",
}
__all__ = ["BatonApp", "BatonError", "InvalidTransition", "ReadyWork", "Workspace", "UnitOfWork"]
