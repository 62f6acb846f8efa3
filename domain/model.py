"""The Task aggregate: a unit of work with the steps of its plan.

A Task is the consistency boundary of its steps: a step transition can end the task, change
which siblings are ready or move the current pointer, so every step event is an event of its
task, and one version number orders the whole history. The step lifecycle keeps its own table
(``lifecycle.STEP_LIFECYCLE``); ``Step`` (domain/steps.py) is the entity it governs, and
``TaskState`` (domain/task_state.py) the indexes that keep each transition O(1) in the plan's
size.

Command methods validate first and only then trigger events; an event's ``apply`` only applies
(it runs again on every replay) and touches the steps it names, never the whole plan. Every
class carries an explicit, stable topic so stored events read back after a refactor; events
whose shape changed carry a ``class_version`` and an upcast.

Why one module of this size: each event's ``apply`` sits beside the command method that
triggers it and the topic that names it; split apart, a reader would have to hold three files
to see one transition. The state it works on (indexes) and the readers are in task_state.py.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Final

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as BaseSnapshot
from eventsourcing.utils import register_topic

from baton.domain import ids
from baton.domain.errors import InvalidTransition, StaleClaim
from baton.domain.lifecycle import STEP_LIFECYCLE, TASK_ENDED, TASK_LIFECYCLE, TaskStatus
from baton.domain.plans import StepSpec
from baton.domain.session import CommandRecord, Session
from baton.domain.steps import (
    CANCELLED,
    COMPLETED,
    CURRENT,
    FAILED,
    PENDING,
    SKIPPED,
    Step,
    retry_delay,
)
from baton.domain.task_state import DERIVED, TaskState

DEFAULT_PRIORITY = 5
_RUNNING: Final = TaskStatus.RUNNING.value
_ENDED: Final = frozenset(s.value for s in TASK_ENDED)


def step_record(spec: StepSpec, index: int, *, sequential: bool) -> dict[str, Any]:
    """The stored record of a new step: only what differs from a step's defaults, and no
    ``depends_on`` in a sequential plan (each step follows the one before), so a plan's events
    stay near the size of the request that made them."""
    record: dict[str, Any] = {"step_index": index, "step_name": spec.step_name}
    if spec.description:
        record["description"] = spec.description
    if spec.action_instruction is not None:
        record["action_instruction"] = spec.action_instruction
    if spec.validation_instruction is not None:
        record["validation_instruction"] = spec.validation_instruction
    if not sequential and spec.depends_on:
        record["depends_on"] = list(spec.depends_on)
    if spec.max_attempts != 1:
        record["max_attempts"] = spec.max_attempts
    if spec.retry_delay_s != 1.0:
        record["retry_delay_s"] = spec.retry_delay_s
    return record


def _step_of(task_id: str, record: dict[str, Any], previous: str | None) -> Step:
    index = int(record["step_index"])
    data = dict(record)
    data.setdefault("step_id", ids.step_id_for(task_id, index))
    if "depends_on" not in record and previous is not None:
        data["depends_on"] = [previous]
    return Step.from_dict(data)


def _chained(records: list[dict[str, Any]], sequential: bool) -> bool:
    """Whether stored records (0.1 kept every ``depends_on``) form a sequential chain."""
    if not sequential:
        return False
    previous = None
    for record in records:
        deps = record.get("depends_on")
        if deps is None:
            continue
        if list(deps) != ([] if previous is None else [previous]):
            return False
        previous = record["step_name"]
    return True


class Task(TaskState, Aggregate):
    """A unit of work for one session, with an instruction and a plan of steps."""

    TOPIC: ClassVar[str] = "baton:Task"
    class_version: ClassVar[int] = 2

    # -- events -------------------------------------------------------------------------
    class Event(Aggregate.Event):
        display_message: str

    class Created(Aggregate.Created):
        TOPIC = "baton:Task.Created"
        task_id: str
        task_name: str
        task_instruction: str
        session_id: str
        priority: int
        goal: str | None
        inputs_params: dict[str, Any]
        context: dict[str, Any]
        status: str
        workspace: str | None
        created_at: float
        steps: list[dict[str, Any]]
        display_message: str
        #: None in events written before 0.2: inferred from the steps' ``depends_on``.
        sequential: bool | None = None

    class Started(Event):
        TOPIC = "baton:Task.Started"

        def apply(self, task: Task) -> None:
            task.status = _RUNNING
            task._dirty_all = True  # every step's ``ready`` flag

    class StepStarted(Event):
        """A step became current (in progress); it gets a fresh parent_action_id. When the
        command that started it also schedules its trigger (``task.start``, ``task.next``),
        the trigger comes in this event (a ``TriggerScheduled`` of its own in earlier stores:
        one event fewer per step), replacing the task's pending one as ``TriggerScheduled``
        does."""

        TOPIC = "baton:Task.StepStarted"
        step_id: str
        parent_action_id: str
        trigger: dict[str, Any] | None = None

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.attempts += 1
            step.claimed_by = None
            step.claim_id = None
            step.lease_expires_at = None
            step.retry_at = None
            step.parent_action_id = self.parent_action_id
            task._set_status(step, CURRENT)
            if self.trigger is not None:
                task._set_trigger(self.trigger)

    class StepClaimed(Event):
        TOPIC = "baton:Task.StepClaimed"
        step_id: str
        worker: str
        claim_id: str | None = None
        lease_expires_at: float | None = None

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.claimed_by = self.worker
            step.claim_id = self.claim_id
            step.lease_expires_at = self.lease_expires_at
            task._place(step)

    class ClaimRenewed(Event):
        """A heartbeat: the claim's holder extended its lease."""

        TOPIC = "baton:Task.ClaimRenewed"
        step_id: str
        claim_id: str
        lease_expires_at: float

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.lease_expires_at = self.lease_expires_at
            task._place(step)

    class ClaimExpired(Event):
        """A claim's lease lapsed: the step is handed out again (``ready``, after its retry
        delay under a retry policy; ``current`` for a sequential plan's step without one), or
        ``failed`` when the lapse was the last attempt its retry policy allows. Under a retry
        policy a lapse counts as an attempt, in a sequential plan too."""

        TOPIC = "baton:Task.ClaimExpired"
        step_id: str
        claim_id: str
        worker: str
        outcome: str
        retry_at: float | None = None

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.claimed_by = None
            step.claim_id = None
            step.lease_expires_at = None
            if self.outcome == "current":
                task._place(step)
                return
            task._drop_trigger_of(step)
            if self.outcome == "failed":
                step.failure_message = "the claim's lease lapsed"
                task._set_status(step, FAILED)
            else:
                step.retry_at = self.retry_at
                task._set_status(step, PENDING)

    class StepCompleted(Event):
        TOPIC = "baton:Task.StepCompleted"
        step_id: str
        result: Any

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.result = self.result
            task._leave(step, COMPLETED)

    class StepAttemptFailed(Event):
        """A failed attempt below the step's ``max_attempts``: ready again at ``retry_at``."""

        TOPIC = "baton:Task.StepAttemptFailed"
        step_id: str
        message: str | None
        attempt: int
        retry_at: float

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.failure_message = self.message
            step.claimed_by = None
            step.retry_at = self.retry_at
            task._leave(step, PENDING)

    class StepFailed(Event):
        TOPIC = "baton:Task.StepFailed"
        step_id: str
        message: str | None

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.failure_message = self.message
            task._leave(step, FAILED)

    class StepSkipped(Event):
        TOPIC = "baton:Task.StepSkipped"
        step_id: str
        message: str | None

        def apply(self, task: Task) -> None:
            task._leave(task.step(self.step_id), SKIPPED)

    class StepCancelled(Event):
        TOPIC = "baton:Task.StepCancelled"
        step_id: str
        reason: str | None

        def apply(self, task: Task) -> None:
            task._leave(task.step(self.step_id), CANCELLED)

    class StepRetried(Event):
        TOPIC = "baton:Task.StepRetried"
        step_id: str
        message: str | None = None

        def apply(self, task: Task) -> None:
            step = task.step(self.step_id)
            step.claimed_by = None
            step.claim_id = None
            step.lease_expires_at = None
            step.retry_at = None
            task._set_status(step, PENDING)

    class TriggerScheduled(Event):
        """A trigger for the current step; it replaces the task's pending trigger, if any."""

        TOPIC = "baton:Task.TriggerScheduled"
        trigger: dict[str, Any]

        def apply(self, task: Task) -> None:
            task._set_trigger(self.trigger)

    class TriggerWithdrawn(Event):
        """Written before 0.2 only: a trigger now goes with its step's transition or its task's
        end, which the StepCompleted/StepFailed/.../Ended events already say."""

        TOPIC = "baton:Task.TriggerWithdrawn"
        trigger_id: str
        reason: str

        def apply(self, task: Task) -> None:
            task._set_trigger(None)

    class PlanRevised(Event):
        """The plan changed: ``added`` and ``changed`` carry step records, ``removed`` names
        the steps the revision cancels (each also gets a StepCancelled event)."""

        TOPIC = "baton:Task.PlanRevised"
        added: list[dict[str, Any]]
        changed: list[dict[str, Any]]
        removed: list[str]
        goal: str | None
        inputs_params: dict[str, Any] | None
        sequential: bool | None = None

        def apply(self, task: Task) -> None:
            if self.sequential is not None and self.sequential != task.sequential:
                task.sequential = self.sequential
            previous: str | None = None
            new_steps = []
            for record in self.added:
                step = _step_of(task.task_id, record, previous if task.sequential else None)
                new_steps.append(step)
                previous = step.step_name
            task._add_steps(new_steps)
            for record in self.changed:
                step = task.step(record["step_id"])
                step.description = record.get("description", "")
                step.action_instruction = record.get("action_instruction")
                step.validation_instruction = record.get("validation_instruction")
                step.max_attempts = record.get("max_attempts", 1)
                step.retry_delay_s = record.get("retry_delay_s", 1.0)
                task._relink(step, list(record.get("depends_on") or ()))
            if self.goal is not None:
                task.goal = self.goal
            if self.inputs_params is not None:
                task.inputs_params = dict(self.inputs_params)
            if self.sequential is not None:
                task._index()  # a change of kind re-decides every dependency: rare, O(n)

    class ContextAdded(Event):
        TOPIC = "baton:Task.ContextAdded"
        key: str
        value: Any

        def apply(self, task: Task) -> None:
            # Copy-on-write: views and earlier events may hold the previous dict.
            task.context = {**task.context, self.key: self.value}
            task._context_dirty = True

    class Ended(Event):
        """The task ended: completed, error or cancelled (its trigger goes with it)."""

        TOPIC = "baton:Task.Ended"
        status: str
        message: str | None

        def apply(self, task: Task) -> None:
            task.status = self.status
            task.message = self.message
            task.ended_at = self.timestamp.timestamp()
            task.trigger = None
            task._dirty_all = True  # every step's ``ready`` flag

    class Snapshot(BaseSnapshot):
        TOPIC = "baton:Task.Snapshot"

        @classmethod
        def take(cls, aggregate: Any) -> Any:
            snapshot = super().take(aggregate)
            for name in DERIVED:
                snapshot.state.pop(name, None)
            return snapshot

        def mutate(self, _: None) -> Any:
            task: Any = super().mutate(_)
            task._index()
            return task

    @staticmethod
    def upcast_v1_v2(state: dict[str, Any]) -> None:
        """A 0.1 snapshot: steps kept a copy of the context (ignored now) and there was no
        ``sequential`` flag (a plan whose dependencies form a chain behaves as one)."""
        steps = state.get("steps") or []
        state["sequential"] = _chained(
            [{"step_name": s.step_name, "depends_on": s.depends_on} for s in steps], True
        )

    # -- state --------------------------------------------------------------------------
    def __init__(
        self,
        task_id: str,
        task_name: str,
        task_instruction: str,
        session_id: str,
        priority: int,
        goal: str | None,
        inputs_params: dict[str, Any],
        context: dict[str, Any],
        status: str,
        workspace: str | None,
        created_at: float,
        steps: list[dict[str, Any]],
        display_message: str,
        sequential: bool | None = None,
    ) -> None:
        self.task_id = task_id
        self.task_name = task_name
        self.task_instruction = task_instruction
        self.session_id = session_id
        self.priority = priority
        self.goal = goal
        self.inputs_params = dict(inputs_params)
        self.context = dict(context)
        self.status = status
        self.workspace = workspace
        self.created_at = created_at
        if sequential is None:
            sequential = _chained(steps, True)
        self.sequential = sequential
        previous: str | None = None
        self.steps: list[Step] = []
        for record in steps:
            step = _step_of(task_id, record, previous if sequential else None)
            self.steps.append(step)
            previous = step.step_name
        self.trigger: dict[str, Any] | None = None
        self.last_trigger: dict[str, Any] | None = None
        self.message: str | None = None
        self.ended_at: float | None = None
        self._index()

    @classmethod
    def create(
        cls,
        *,
        task_id: str,
        task_name: str,
        task_instruction: str,
        session_id: str,
        priority: int,
        specs: list[StepSpec],
        sequential: bool,
        goal: str | None,
        inputs_params: dict[str, Any] | None,
        context: dict[str, Any] | None,
        queued: bool,
        workspace: str | None,
        created_at: float | None = None,
    ) -> Task:
        status = TaskStatus.QUEUED if queued else TaskStatus.RUNNING
        return cls._create(
            cls.Created,
            id=ids.task_uuid(task_id),
            task_id=task_id,
            task_name=task_name,
            task_instruction=task_instruction,
            session_id=session_id,
            priority=priority,
            goal=goal,
            inputs_params=inputs_params or {},
            context=context or {},
            status=status.value,
            workspace=workspace,
            created_at=time.time() if created_at is None else created_at,
            steps=[step_record(spec, i, sequential=sequential) for i, spec in enumerate(specs)],
            sequential=sequential,
            display_message=(
                f"Task {task_name!r} created with {len(specs)} step"
                f"{'' if len(specs) == 1 else 's'}"
                + (f", queued behind the running task of session {session_id!r}" if queued else "")
            ),
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Task:
        """A copy for readers (the live aggregate is only changed under the writer's lock):
        the steps are copied, values inside them (results, context values, trigger dicts) are
        only ever replaced, never changed in place, so they are shared."""
        clone = object.__new__(type(self))
        state = {k: v for k, v in self.__dict__.items() if k not in DERIVED}
        state["_pending_events"] = list(self._pending_events)
        state["steps"] = [s.copy() for s in self.steps]
        clone.__dict__.update(state)
        clone._index()
        memo[id(self)] = clone
        return clone

    # -- reading ------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"task {self.task_id!r}"

    @property
    def ended(self) -> bool:
        return self.status in _ENDED

    # -- commands -----------------------------------------------------------------------
    def require_not_ended(self, verb: str) -> None:
        if self.ended:
            raise InvalidTransition(
                f"cannot {verb} {self.label}: it is {self.status}",
                details={"rule": f"task.{verb}", "state": self.status},
            )

    def require_running(self, verb: str) -> None:
        if not self.running:
            raise InvalidTransition(
                f"cannot {verb} {self.label}: it is {self.status}, not running",
                details={"rule": f"task.{verb}", "state": self.status},
            )

    def _blocked(self, step: Step, verb: str) -> InvalidTransition:
        return InvalidTransition(
            f"cannot {verb} {step.label}: it is blocked by "
            + ", ".join(repr(d) for d in self.unsatisfied(step)),
            details={"rule": f"step.{verb}", "state": "blocked"},
        )

    def check_claim(self, step: Step, claim_id: str | None) -> None:
        """Fencing: a command carrying a claim id acts only while that claim holds the step."""
        if claim_id is not None and (step.claim_id != claim_id or step.status != CURRENT):
            raise StaleClaim(
                f"claim {claim_id!r} no longer holds {step.label}"
                + (f" (it is {step.status})" if step.status != CURRENT else ""),
                details={"step_id": step.step_id, "claim_id": claim_id},
            )

    def start(self) -> None:
        TASK_LIFECYCLE.check("start", self.status, self.label)
        self.trigger_event(self.Started, display_message=f"Task {self.task_name!r} started")

    def start_step(
        self, step: Step, now: float, *, fire_at: float | None = None, priority: int | None = None
    ) -> None:
        """Makes ``step`` current; with ``fire_at``, schedules its trigger in the same event
        (``priority`` as in ``schedule_trigger``)."""
        STEP_LIFECYCLE.check("start", step.status, step.label)
        if not self.dependencies_satisfied(step):
            raise self._blocked(step, "start")
        if step.retry_at is not None and step.retry_at > now:
            raise InvalidTransition(
                f"cannot start {step.label}: it waits for its retry until {step.retry_at:.3f}",
                details={"rule": "step.start", "state": "waiting", "retry_at": step.retry_at},
            )
        action_id = ids.new_action_id()
        trigger = None
        if fire_at is not None:
            trigger = self._trigger_for(step, action_id, fire_at, priority)
        self.trigger_event(
            self.StepStarted,
            step_id=step.step_id,
            parent_action_id=action_id,
            trigger=trigger,
            display_message=f"Step {step.step_name!r} is now in progress"
            + (f" (attempt {step.attempts + 1})" if step.attempts else "")
            + (", its trigger scheduled" if trigger is not None else ""),
        )

    def start_first_ready(
        self, now: float, *, fire_at: float | None = None, priority: int | None = None
    ) -> Step | None:
        """Makes the first ready step (in plan order) current; returns it, or None. With
        ``fire_at``, its trigger is scheduled in the same event."""
        step = self.first_ready(now)
        if step is None:
            return None
        self.start_step(step, now, fire_at=fire_at, priority=priority)
        return step

    def claim(self, step: Step, worker: str, now: float, lease_s: float) -> None:
        if step.status != CURRENT or step.claimed_by is not None:
            raise InvalidTransition(f"cannot claim {step.label}: it is {step.status}")
        self.trigger_event(
            self.StepClaimed,
            step_id=step.step_id,
            worker=worker,
            claim_id=ids.new_claim_id(),
            lease_expires_at=now + lease_s,
            display_message=f"Step {step.step_name!r} claimed by {worker!r}",
        )

    def renew(self, step: Step, claim_id: str, now: float, lease_s: float) -> None:
        self.require_running("renew a claim of")
        self.check_claim(step, claim_id)
        self.trigger_event(
            self.ClaimRenewed,
            step_id=step.step_id,
            claim_id=claim_id,
            lease_expires_at=now + lease_s,
            display_message=f"Claim of step {step.step_name!r} renewed for {lease_s:g} s",
        )

    def expire_claim(self, step: Step, claim_id: str, now: float) -> bool:
        """Ends a lapsed claim; False (nothing appended) when it no longer holds or has not
        lapsed (a heartbeat came first, or another instance expired it already)."""
        if (
            not self.running
            or step.status != CURRENT
            or step.claim_id != claim_id
            or step.lease_expires_at is None
            or step.lease_expires_at > now
        ):
            return False
        retry_at: float | None = None
        if step.max_attempts > 1 and step.attempts >= step.max_attempts:
            outcome = "failed"
        elif self.sequential and step.max_attempts == 1:
            outcome = "current"  # no policy: the sequential plan's current step stays current
        else:
            outcome = "ready"
            if step.max_attempts > 1:
                retry_at = now + retry_delay(step, step.attempts)
        worker = step.claimed_by or "anonymous"
        self.trigger_event(
            self.ClaimExpired,
            step_id=step.step_id,
            claim_id=claim_id,
            worker=worker,
            outcome=outcome,
            retry_at=retry_at,
            display_message=f"Claim of step {step.step_name!r} by {worker!r} lapsed; the step is "
            + {"failed": "failed (no attempts left)", "current": "current, unclaimed"}.get(
                outcome, "ready again"
            ),
        )
        return True

    def complete_step(self, step: Step, result: Any = None) -> None:
        self.require_running("complete a step of")
        STEP_LIFECYCLE.check("complete", step.status, step.label)
        if step.status == PENDING and not self.dependencies_satisfied(step):
            raise self._blocked(step, "complete")
        self.trigger_event(
            self.StepCompleted,
            step_id=step.step_id,
            result=result,
            display_message=f"Step {step.step_name!r} completed",
        )

    def fail_step(self, step: Step, message: str | None, now: float) -> None:
        """Fails an attempt: the step is ready again after its retry delay while its policy
        allows more attempts, failed otherwise."""
        self.require_running("fail a step of")
        STEP_LIFECYCLE.check("fail", step.status, step.label)
        if max(step.attempts, 1) < step.max_attempts:
            retry_at = now + retry_delay(step, step.attempts)
            self.trigger_event(
                self.StepAttemptFailed,
                step_id=step.step_id,
                message=message,
                attempt=max(step.attempts, 1),
                retry_at=retry_at,
                display_message=f"Step {step.step_name!r} failed attempt {step.attempts} of "
                f"{step.max_attempts}; ready again in {retry_at - now:g} s"
                + (f": {message}" if message else ""),
            )
            return
        self.trigger_event(
            self.StepFailed,
            step_id=step.step_id,
            message=message,
            display_message=f"Step {step.step_name!r} failed" + (f": {message}" if message else ""),
        )

    def skip_step(self, step: Step, message: str | None) -> None:
        self.require_running("skip a step of")
        STEP_LIFECYCLE.check("skip", step.status, step.label)
        self.trigger_event(
            self.StepSkipped,
            step_id=step.step_id,
            message=message,
            display_message=f"Step {step.step_name!r} skipped"
            + (f": {message}" if message else ""),
        )

    def retry_step(self, step: Step, message: str | None = None) -> None:
        self.require_running("retry a step of")
        STEP_LIFECYCLE.check("retry", step.status, step.label)
        self.trigger_event(
            self.StepRetried,
            step_id=step.step_id,
            message=message,
            display_message=f"Step {step.step_name!r} will be retried"
            + (f": {message}" if message else ""),
        )

    def cancel_step(self, step: Step, reason: str | None) -> None:
        STEP_LIFECYCLE.check("cancel", step.status, step.label)
        self.trigger_event(
            self.StepCancelled,
            step_id=step.step_id,
            reason=reason,
            display_message=f"Step {step.step_name!r} cancelled"
            + (f": {reason}" if reason else ""),
        )

    def schedule_trigger(self, step: Step, fire_at: float, priority: int | None) -> dict[str, Any]:
        """Schedules a trigger for the current ``step``, replacing the pending one."""
        if step.status != CURRENT:
            raise InvalidTransition(
                f"cannot schedule a trigger for {step.label}: it is {step.status}"
            )
        trigger = self._trigger_for(step, step.parent_action_id, fire_at, priority)
        self.trigger_event(
            self.TriggerScheduled,
            trigger=trigger,
            display_message=f"Trigger scheduled for step {step.step_name!r}",
        )
        return trigger

    def _trigger_for(
        self, step: Step, action_id: str | None, fire_at: float, priority: int | None
    ) -> dict[str, Any]:
        return {
            "trigger_id": ids.new_trigger_id(),
            "task_id": self.task_id,
            "step_id": step.step_id,
            "session_id": self.session_id,
            "fire_at": fire_at,
            "priority": self.priority if priority is None else priority,
            "next_action_description": step.action_instruction
            or step.description
            or step.step_name,
            "payload": {
                "parent_action_id": action_id,
                "step_name": step.step_name,
                "task_name": self.task_name,
            },
        }

    def add_context(self, key: str, value: Any) -> None:
        self.require_not_ended("add context to")
        self.trigger_event(
            self.ContextAdded, key=key, value=value, display_message=f"Context {key!r} added"
        )

    def end(self, verb: str, message: str | None) -> None:
        """Ends the task (``complete``, ``fail`` or ``cancel``), its steps as the contract says."""
        status = TASK_LIFECYCLE.check(verb, self.status, self.label)
        for step in self.current_steps():
            if verb == "complete":
                self.trigger_event(
                    self.StepCompleted,
                    step_id=step.step_id,
                    result=None,
                    display_message=f"Step {step.step_name!r} completed with its task",
                )
            elif verb == "fail":
                self.trigger_event(
                    self.StepFailed,
                    step_id=step.step_id,
                    message=message,
                    display_message=f"Step {step.step_name!r} failed with its task"
                    + (f": {message}" if message else ""),
                )
            else:
                self.cancel_step(step, message)
        if verb == "cancel":
            for step in self.steps:
                if step.status == PENDING:
                    self.cancel_step(step, message)
        words = {"complete": "completed", "fail": "failed", "cancel": "cancelled"}
        self.trigger_event(
            self.Ended,
            status=status,
            message=message,
            display_message=f"Task {self.task_name!r} {words[verb]}"
            + (f": {message}" if message else ""),
        )

    def complete_if_finished(self) -> bool:
        """Completes a running task whose steps are all completed, skipped or cancelled."""
        if self.running and self.steps and self.all_steps_finished():
            self.end("complete", "every step is finished")
            return True
        return False


register_topic(Task.Snapshot.TOPIC, Task.Snapshot)

__all__ = ["CommandRecord", "Session", "Step", "Task", "step_record"]
