"""The application service: every command of the contract, each with one handler.

A command loads the aggregates it touches into a unit of work, validates, triggers events, and
all of them are written in one ``save(...)`` (one transaction), together with the reply when the
command carried an id. A concurrent change to the same aggregate raises IntegrityError on save;
the command is then re-run on fresh state, or reported as a 409 after too many attempts. A
rejected command raises before anything is saved, so it appends nothing.

The service is synchronous (eventsourcing is): adapters call it from worker threads.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from copy import deepcopy
from threading import Lock
from typing import Any, ClassVar, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    ProcessingEvent,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    Notification,
    OperationalError,
    PersistenceError,
    Transcoding,
)

from baton.domain import commands as c
from baton.domain import ids
from baton.domain.errors import (
    BatonError,
    ConcurrentChange,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    StoreUnavailable,
)
from baton.domain.lifecycle import STEP_HISTORY, StepStatus
from baton.domain.model import CommandRecord, Session, Step, Task
from baton.domain.plans import Plan, resolve
from baton.domain.views import history_entry, step_view, task_view

Reply = Any
A = TypeVar("A", bound=Aggregate)


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
        self.staged = staged if staged is not None else {}
        self.loaded: dict[UUID, Aggregate] = {}
        self.after_commit: list[Callable[[], None]] = []

    def _get(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        if aggregate_id in self.loaded:
            return self.loaded[aggregate_id]  # type: ignore[return-value]
        if aggregate_id in self.staged:
            # Changed by an earlier command of the same group: work on a copy, so a command
            # that fails halfway leaves the group's state as it was.
            aggregate: Aggregate = deepcopy(self.staged[aggregate_id])
        else:
            try:
                with self.app.store_errors():
                    aggregate = self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
        if not isinstance(aggregate, kind):
            return None
        self.loaded[aggregate_id] = aggregate
        return aggregate

    def task(self, task_id: str) -> Task:
        task = self._get(ids.task_uuid(task_id), Task)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    def session(self, session_id: str) -> Session | None:
        return self._get(ids.session_uuid(session_id), Session)

    def add(self, aggregate: Aggregate) -> None:
        self.loaded[aggregate.id] = aggregate

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
    ) -> None:
        super().__init__(env)
        cache = self.repository.cache
        if isinstance(cache, LRUCache) and not self.repository.fastforward:
            self.repository.cache = NewestVersionCache(cache.maxsize)
        self.workspace = workspace
        self.ready_work = ready_work
        self.clock = clock
        self._decoded: dict[int, Any] = {}
        self._decoded_lock = Lock()

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """``Application.save``, without its runtime Protocol checks for plain aggregates.

        ``ProcessingEvent.collect_events`` asks ``isinstance(obj, DomainEventProtocol)`` of
        every aggregate, a runtime-checkable Protocol walked attribute by attribute: ~3% of a
        command's CPU time in the service. The steps below are the library's own (9.5).
        """
        if kwargs or not all(isinstance(obj, Aggregate) for obj in objs):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in objs:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # deprecated, a no-op unless overridden
        return recordings

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
            with self._decoded_lock:
                decoded = self._decoded
                decoded[key] = event
                if len(decoded) > self.decoded_cache_size:
                    for oldest in list(decoded)[: len(decoded) // 4]:
                        del decoded[oldest]
        return event

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
        concurrent change, each command is re-run alone on fresh state.
        """
        results = self._try_group(requests)
        if results is None:
            results = [self._handle_alone(command, cid) for command, cid in requests]
        return results

    def _handle_alone(self, command: c.Command, command_id: str | None) -> Reply | BaseException:
        for attempt in range(self.max_attempts):
            results = self._try_group([(command, command_id)])
            if results is not None:
                return results[0]
            time.sleep(_retry_delay(attempt))
        return ConcurrentChange(
            f"{type(command).__name__} kept meeting concurrent changes; nothing was applied"
        )

    def _try_group(
        self, requests: Sequence[tuple[c.Command, str | None]]
    ) -> list[Reply | BaseException] | None:
        """One attempt at a group; None when the save met a concurrent change."""
        results: list[Reply | BaseException] = []
        staged: dict[UUID, Aggregate] = {}
        replies: dict[str, Reply] = {}
        hooks: list[Callable[[], None]] = []
        touched: set[UUID] = set()
        for command, command_id in requests:
            cid = command_id or command.command_id
            try:
                if cid and cid in replies:
                    results.append(replies[cid])
                    continue
                record = self._record_of(cid) if cid else None
                if record is not None:
                    results.append(record.reply)
                    continue
                handler = HANDLERS.get(type(command))
                if handler is None:
                    raise InvalidRequest(f"unknown command {type(command).__name__}")
                uow = UnitOfWork(self, staged)
                reply = handler(self, uow, command)
            except BatonError as error:
                results.append(error)
                continue
            except Exception as error:  # a bug: this command fails alone
                results.append(error)
                continue
            touched.update(uow.loaded)
            staged.update({a.id: a for a in uow.changed()})
            if cid:
                record = CommandRecord.create(cid, SUBJECTS[type(command)], reply)
                staged[record.id] = record
                replies[cid] = reply
            hooks.extend(uow.after_commit)
            results.append(reply)
        if staged:
            try:
                with self.store_errors():
                    self.save(*staged.values())
            except IntegrityError:
                self._forget(touched)
                return None
            except StoreUnavailable as error:
                self._forget(touched)
                return [r if isinstance(r, BaseException) else error for r in results]
        for hook in hooks:
            hook()
        return results

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
        try:
            with self.store_errors():
                record: Aggregate = self.repository.get(ids.command_uuid(command_id))
        except AggregateNotFoundError:
            return None
        return record if isinstance(record, CommandRecord) else None

    # -- reading (the projections answer users; these serve tests and the planner) -------
    def get_task(self, task_id: str, version: int | None = None) -> Task:
        try:
            with self.store_errors():
                task: Aggregate = self.repository.get(ids.task_uuid(task_id), version=version)
        except AggregateNotFoundError:
            raise NotFound(f"no task {task_id!r}") from None
        if not isinstance(task, Task):
            raise NotFound(f"no task {task_id!r}")
        if version is not None and task.version != version:
            raise NotFound(f"task {task_id!r} has no version {version}")
        return task

    def task_view(self, task_id: str, version: int | None = None) -> dict[str, Any]:
        return task_view(self.get_task(task_id, version))

    def history(self, task_id: str) -> list[dict[str, Any]]:
        self.get_task(task_id)
        return [
            history_entry(task_id, e)  # type: ignore[arg-type]
            for e in self.events.get(ids.task_uuid(task_id))
        ]

    def session_state(self, session_id: str) -> Session | None:
        try:
            session: Aggregate = self.repository.get(ids.session_uuid(session_id))
        except AggregateNotFoundError:
            return None
        return session if isinstance(session, Session) else None


# -- handlers: one per command ---------------------------------------------------------------


def _require_plan(plan: Plan | None, what: str) -> Plan:
    if plan is None:
        raise InvalidRequest(f"{what} needs a plan (no planner answered for it)")
    return plan


def _after_end(app: BatonApp, uow: UnitOfWork, task: Task) -> None:
    """Releases an ended task from its session and starts the session's next queued task."""
    session = uow.session(task.session_id)
    if session is not None:
        next_id = session.release(task.task_id)
        if next_id is not None:
            following = uow.task(next_id)
            following.start()
            following.start_first_ready()
    if app.workspace is not None:
        workspace, task_id, status = app.workspace, task.task_id, task.status
        uow.after_commit.append(lambda: workspace.release(task_id, status))


def _finish_if_done(app: BatonApp, uow: UnitOfWork, task: Task) -> bool:
    if task.complete_if_finished():
        _after_end(app, uow, task)
        return True
    return False


def create_task(app: BatonApp, uow: UnitOfWork, cmd: c.CreateTask) -> Reply:
    plan = _require_plan(cmd.plan, "creating a task")
    specs = resolve(plan)
    task_id = ids.new_task_id(cmd.task_name)
    session_id = cmd.session_id or task_id
    session = uow.session(session_id)
    if session is None:
        session = Session.create(session_id)
        uow.add(session)
    running = session.admit(task_id)
    workspace = app.workspace.path_for(task_id) if app.workspace else None
    task = Task.create(
        task_id=task_id,
        task_name=cmd.task_name,
        task_instruction=cmd.task_instruction,
        session_id=session_id,
        priority=cmd.priority,
        specs=specs,
        goal=plan.goal,
        inputs_params=plan.inputs_params,
        context=plan.context,
        queued=not running,
        workspace=workspace,
        created_at=app.clock(),
    )
    uow.add(task)
    if running:
        task.start_first_ready()
    if app.workspace is not None:
        ws = app.workspace
        uow.after_commit.append(lambda: ws.create(task_id))
    return task_view(task)


def _schedule(app: BatonApp, task: Task, step: Step, delay_s: float, priority: int | None) -> Reply:
    trigger = task.schedule_trigger(step, app.clock() + delay_s, priority)
    return {"status": "queued", "step": step_view(task, step), "trigger": trigger}


def start_task(app: BatonApp, uow: UnitOfWork, cmd: c.StartTask) -> Reply:
    task = uow.task(cmd.task_id)
    task.require_running("start")
    current = task.current_steps()
    step = current[0] if current else task.start_first_ready()
    if step is None:
        return {"status": "no_next_step", "step": None, "trigger": None}
    return _schedule(app, task, step, cmd.delay_s, cmd.priority)


def _revise(task: Task, plan: Plan) -> dict[str, list[str]]:
    history = [s.step_name for s in task.steps if s.status in {h.value for h in STEP_HISTORY}]
    specs = resolve(plan, history=history)
    ignored = [s.step_name for s in plan.steps if s.step_name in set(history)]
    had_current = bool(task.current_steps())
    diff = task.revise_plan(specs, ignored, plan.goal, plan.inputs_params)
    if plan.context:
        for key, value in plan.context.items():
            task.add_context(key, value)
    if had_current and task.running and not task.current_steps():
        task.start_first_ready()
    return diff


def _advance(app: BatonApp, uow: UnitOfWork, task: Task) -> Reply:
    task.require_running("advance")
    current = task.current_steps()
    if current:
        task.complete_step(current[0])
    if _finish_if_done(app, uow, task):
        return {"status": "completed", "step": None, "trigger": None}
    following = task.current_steps()
    step = following[0] if following and not current else task.start_first_ready()
    if step is None:
        return {"status": "no_next_step", "step": None, "trigger": None}
    return _schedule(app, task, step, 0.0, None)


def next_step(app: BatonApp, uow: UnitOfWork, cmd: c.NextStep) -> Reply:
    task = uow.task(cmd.task_id)
    task.require_running("advance")
    if cmd.plan is not None or cmd.replan:
        _revise(task, _require_plan(cmd.plan, "a replan"))
        if _finish_if_done(app, uow, task):
            return {"status": "completed", "step": None, "trigger": None}
    return _advance(app, uow, task)


def replan_task(app: BatonApp, uow: UnitOfWork, cmd: c.ReplanTask) -> Reply:
    task = uow.task(cmd.task_id)
    task.require_not_ended("replan")
    diff = _revise(task, _require_plan(cmd.plan, "a replan"))
    advanced = None
    if not _finish_if_done(app, uow, task) and cmd.advance_next:
        advanced = _advance(app, uow, task)
    view = task_view(task)
    view["diff"] = diff
    if advanced is not None:
        view["advance"] = {"status": advanced["status"], "trigger": advanced["trigger"]}
    return view


def _end_task(verb: str) -> Callable[[BatonApp, UnitOfWork, Any], Reply]:
    def handler(app: BatonApp, uow: UnitOfWork, cmd: Any) -> Reply:
        task = uow.task(cmd.task_id)
        task.end(verb, cmd.reason if verb == "cancel" else cmd.message)
        _after_end(app, uow, task)
        return task_view(task)

    handler.__name__ = f"{verb}_task"
    return handler


def add_context(app: BatonApp, uow: UnitOfWork, cmd: c.AddContext) -> Reply:
    task = uow.task(cmd.task_id)
    task.add_context(cmd.key, cmd.value)
    return task_view(task)


def _urgency(task: Task, step: Step) -> tuple[int, float, float, str, int]:
    """Most urgent first: priority, then fire_at, then age — the queue view's order too. A
    step's pending trigger sets its priority and fire_at; otherwise its task does."""
    trigger = task.trigger
    if trigger is not None and trigger["step_id"] == step.step_id:
        priority, fire_at = int(trigger["priority"]), float(trigger["fire_at"])
    else:
        priority, fire_at = task.priority, task.created_at
    return (priority, fire_at, task.created_at, task.task_id, step.step_index)


def _claimable(task: Task) -> list[Step]:
    if not task.running:
        return []
    steps = [
        s
        for s in task.steps
        if (s.status == StepStatus.CURRENT.value and s.claimed_by is None) or task.is_ready(s)
    ]
    return sorted(steps, key=lambda s: _urgency(task, s))


def _idle_status(tasks: list[Task]) -> str:
    live = [t for t in tasks if t.running]
    if any(s.status == StepStatus.FAILED.value for t in live for s in t.steps):
        return "failed"
    if any(
        s.status in (StepStatus.PENDING.value, StepStatus.CURRENT.value)
        for t in live
        for s in t.steps
    ):
        return "blocked"
    if any(t.status == "queued" for t in tasks):
        return "blocked"
    return "done"


def claim_step(app: BatonApp, uow: UnitOfWork, cmd: c.ClaimStep) -> Reply:
    worker = cmd.worker or "anonymous"
    if cmd.task_id is not None:
        scope: list[Task] = [uow.task(cmd.task_id)]
    elif cmd.session_id is not None:
        session = uow.session(cmd.session_id)
        scope = [uow.task(session.running)] if session and session.running else []
    elif app.ready_work is not None:
        scope = [uow.task(t) for t in app.ready_work.candidate_tasks(None, 20)]
    else:
        raise InvalidRequest("step.claim needs a session_id or a task_id here")
    candidates = [(task, step) for task in scope for step in _claimable(task)[:1]]
    if candidates:
        task, step = min(candidates, key=lambda ts: _urgency(*ts))
        if step.status == StepStatus.PENDING.value:
            task.start_step(step)
        task.claim(step, worker)
        return {"step": step_view(task, step), "queue_status": "in_progress"}
    if cmd.task_id is None and cmd.session_id is None and app.ready_work is not None:
        status = app.ready_work.idle_status(None)
    else:
        status = _idle_status(scope)
    return {"step": None, "queue_status": status}


def _step_command(verb: str) -> Callable[[BatonApp, UnitOfWork, Any], Reply]:
    def handler(app: BatonApp, uow: UnitOfWork, cmd: Any) -> Reply:
        task = uow.task(cmd.task_id)
        step = task.step(cmd.step_id)
        if verb == "complete":
            task.complete_step(step, cmd.result)
        elif verb == "fail":
            task.fail_step(step, cmd.message)
        elif verb == "skip":
            task.skip_step(step, cmd.message)
        else:
            task.retry_step(step)
        _finish_if_done(app, uow, task)
        return {**step_view(task, step), "task_status": task.status}

    handler.__name__ = f"{verb}_step"
    return handler


HANDLERS: dict[type[c.Command], Callable[[BatonApp, UnitOfWork, Any], Reply]] = {
    c.CreateTask: create_task,
    c.StartTask: start_task,
    c.NextStep: next_step,
    c.ReplanTask: replan_task,
    c.CompleteTask: _end_task("complete"),
    c.FailTask: _end_task("fail"),
    c.CancelTask: _end_task("cancel"),
    c.AddContext: add_context,
    c.ClaimStep: claim_step,
    c.CompleteStep: _step_command("complete"),
    c.FailStep: _step_command("fail"),
    c.SkipStep: _step_command("skip"),
    c.RetryStep: _step_command("retry"),
}

#: The contract's subject (after the prefix) of each command.
SUBJECTS: dict[type[c.Command], str] = {
    c.CreateTask: "task.create",
    c.StartTask: "task.start",
    c.NextStep: "task.next",
    c.ReplanTask: "task.replan",
    c.CompleteTask: "task.complete",
    c.FailTask: "task.fail",
    c.CancelTask: "task.cancel",
    c.AddContext: "task.context",
    c.ClaimStep: "step.claim",
    c.CompleteStep: "step.complete",
    c.FailStep: "step.fail",
    c.SkipStep: "step.skip",
    c.RetryStep: "step.retry",
}

__all__ = ["BatonApp", "BatonError", "InvalidTransition", "ReadyWork", "Workspace", "UnitOfWork"]
