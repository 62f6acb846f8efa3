"""The aggregates: Task (with the steps of its plan), Session, and CommandRecord.

A Task is the consistency boundary of its steps: a step transition can end the task, change
which siblings are ready or move the current pointer, so every step event is an event of its
task, and one version number orders the whole history. The step lifecycle keeps its own table
(``lifecycle.STEP_LIFECYCLE``); ``Step`` is the entity it governs.

Command methods validate first and only then trigger events; an event's ``apply`` only applies
(it runs again on every replay). Every class carries an explicit, stable topic so stored events
read back after a refactor.
"""

from __future__ import annotations

import time
from copy import deepcopy
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as BaseSnapshot
from eventsourcing.utils import register_topic

from baton.domain import ids
from baton.domain.errors import InvalidPlan, InvalidTransition, NotFound
from baton.domain.lifecycle import (
    STEP_HISTORY,
    STEP_LIFECYCLE,
    STEP_SATISFIED,
    TASK_ENDED,
    TASK_LIFECYCLE,
    StepStatus,
    TaskStatus,
)
from baton.domain.plans import StepSpec

DEFAULT_PRIORITY = 5

# Plain strings of the statuses (an Enum member's ``.value`` is a property call on hot paths).
_PENDING: Final = StepStatus.PENDING.value
_CURRENT: Final = StepStatus.CURRENT.value
_COMPLETED: Final = StepStatus.COMPLETED.value
_FAILED: Final = StepStatus.FAILED.value
_SKIPPED: Final = StepStatus.SKIPPED.value
_CANCELLED: Final = StepStatus.CANCELLED.value
_RUNNING: Final = TaskStatus.RUNNING.value
_SATISFIED: Final = frozenset(s.value for s in STEP_SATISFIED)
_DONE: Final = frozenset({_COMPLETED, _SKIPPED, _CANCELLED})
_ENDED: Final = frozenset(s.value for s in TASK_ENDED)


@dataclass
class Step:
    """One step of a task's plan."""

    step_id: str
    step_index: int
    step_name: str
    description: str
    action_instruction: str | None
    validation_instruction: str | None
    depends_on: list[str]
    status: str = StepStatus.PENDING.value
    claimed_by: str | None = None
    result: Any = None
    failure_message: str | None = None
    attempts: int = 0
    context: dict[str, Any] = field(default_factory=dict)
    parent_action_id: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        # Copies the mutable fields: an event's record must never alias live state, or a later
        # change of the step in the same unit of work would rewrite the event before it is saved.
        return cls(
            **{
                **data,
                "depends_on": list(data.get("depends_on") or ()),
                "context": dict(data.get("context") or {}),
            }
        )

    def as_dict(self) -> dict[str, Any]:
        # dataclasses.asdict, written out: it was a third of a create's CPU time.
        return {
            "step_id": self.step_id,
            "step_index": self.step_index,
            "step_name": self.step_name,
            "description": self.description,
            "action_instruction": self.action_instruction,
            "validation_instruction": self.validation_instruction,
            "depends_on": list(self.depends_on),
            "status": self.status,
            "claimed_by": self.claimed_by,
            "result": _copied(self.result),
            "failure_message": self.failure_message,
            "attempts": self.attempts,
            "context": {k: _copied(v) for k, v in self.context.items()},
            "parent_action_id": self.parent_action_id,
        }

    @property
    def label(self) -> str:
        return f"step {self.step_name!r}"


_IMMUTABLE = (str, int, float, bool, type(None))


def _copied(value: Any) -> Any:
    """A deep copy of a JSON-like value (as ``asdict`` makes), sharing immutable leaves."""
    return value if isinstance(value, _IMMUTABLE) else deepcopy(value)


if tuple(f.name for f in fields(Step)) != tuple(Step("", 0, "", "", None, None, []).as_dict()):
    raise AssertionError("Step.as_dict must name every field of Step")  # pragma: no cover


def _step_from_spec(task_id: str, index: int, spec: StepSpec) -> dict[str, Any]:
    return Step(
        step_id=ids.step_id_for(task_id, index),
        step_index=index,
        step_name=spec.step_name,
        description=spec.description,
        action_instruction=spec.action_instruction,
        validation_instruction=spec.validation_instruction,
        depends_on=list(spec.depends_on),
    ).as_dict()


class Task(Aggregate):
    """A unit of work for one session, with an instruction and a plan of steps."""

    TOPIC: ClassVar[str] = "baton:Task"

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

    class Started(Event):
        TOPIC = "baton:Task.Started"

        def apply(self, task: Task) -> None:
            task.status = _RUNNING

    class StepStarted(Event):
        """A step became current (in progress); it gets a fresh parent_action_id."""

        TOPIC = "baton:Task.StepStarted"
        step_id: str
        parent_action_id: str

        def apply(self, task: Task) -> None:
            step = task.steps[task.index_of(self.step_id)]
            step.status = _CURRENT
            step.attempts += 1
            step.claimed_by = None
            step.parent_action_id = self.parent_action_id

    class StepClaimed(Event):
        TOPIC = "baton:Task.StepClaimed"
        step_id: str
        worker: str

        def apply(self, task: Task) -> None:
            task.steps[task.index_of(self.step_id)].claimed_by = self.worker

    class StepCompleted(Event):
        TOPIC = "baton:Task.StepCompleted"
        step_id: str
        result: Any

        def apply(self, task: Task) -> None:
            step = task.steps[task.index_of(self.step_id)]
            step.status = _COMPLETED
            step.result = self.result
            if self.result is not None:
                for other in task.steps:
                    if step.step_name in other.depends_on:
                        other.context[step.step_name] = self.result

    class StepFailed(Event):
        TOPIC = "baton:Task.StepFailed"
        step_id: str
        message: str | None

        def apply(self, task: Task) -> None:
            step = task.steps[task.index_of(self.step_id)]
            step.status = _FAILED
            step.failure_message = self.message

    class StepSkipped(Event):
        TOPIC = "baton:Task.StepSkipped"
        step_id: str
        message: str | None

        def apply(self, task: Task) -> None:
            task.steps[task.index_of(self.step_id)].status = _SKIPPED

    class StepCancelled(Event):
        TOPIC = "baton:Task.StepCancelled"
        step_id: str
        reason: str | None

        def apply(self, task: Task) -> None:
            task.steps[task.index_of(self.step_id)].status = _CANCELLED

    class StepRetried(Event):
        TOPIC = "baton:Task.StepRetried"
        step_id: str

        def apply(self, task: Task) -> None:
            step = task.steps[task.index_of(self.step_id)]
            step.status = _PENDING
            step.claimed_by = None

    class TriggerScheduled(Event):
        """A trigger for the current step; it replaces the task's pending trigger, if any."""

        TOPIC = "baton:Task.TriggerScheduled"
        trigger: dict[str, Any]

        def apply(self, task: Task) -> None:
            task.trigger = dict(self.trigger)
            task.last_trigger = dict(self.trigger)

    class TriggerWithdrawn(Event):
        TOPIC = "baton:Task.TriggerWithdrawn"
        trigger_id: str
        reason: str

        def apply(self, task: Task) -> None:
            task.trigger = None

    class PlanRevised(Event):
        """The plan changed: ``added`` and ``changed`` carry the new step records, ``removed``
        names the steps the revision cancels (each also gets a StepCancelled event)."""

        TOPIC = "baton:Task.PlanRevised"
        added: list[dict[str, Any]]
        changed: list[dict[str, Any]]
        removed: list[str]
        goal: str | None
        inputs_params: dict[str, Any] | None

        def apply(self, task: Task) -> None:
            for record in self.changed:
                step = task.steps[task.index_of(record["step_id"])]
                step.description = record["description"]
                step.action_instruction = record["action_instruction"]
                step.validation_instruction = record["validation_instruction"]
                step.depends_on = list(record["depends_on"])
                task.inherit_results(step)
            for record in self.added:
                step = Step.from_dict(record)
                step.context.update(task.context)
                task.steps.append(step)
                task.inherit_results(step)
            if self.goal is not None:
                task.goal = self.goal
            if self.inputs_params is not None:
                task.inputs_params = dict(self.inputs_params)

    class ContextAdded(Event):
        TOPIC = "baton:Task.ContextAdded"
        key: str
        value: Any

        def apply(self, task: Task) -> None:
            task.context[self.key] = self.value
            for step in task.steps:
                step.context[self.key] = self.value

    class Ended(Event):
        """The task ended: completed, error or cancelled."""

        TOPIC = "baton:Task.Ended"
        status: str
        message: str | None

        def apply(self, task: Task) -> None:
            task.status = self.status
            task.message = self.message
            task.ended_at = self.timestamp.timestamp()

    class Snapshot(BaseSnapshot):
        TOPIC = "baton:Task.Snapshot"

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
        self.steps: list[Step] = [Step.from_dict(s) for s in steps]
        for step in self.steps:
            step.context.update(self.context)
        self.trigger: dict[str, Any] | None = None
        self.last_trigger: dict[str, Any] | None = None
        self.message: str | None = None
        self.ended_at: float | None = None

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
            steps=[_step_from_spec(task_id, i, spec) for i, spec in enumerate(specs)],
            display_message=(
                f"Task {task_name!r} created with {len(specs)} step"
                f"{'' if len(specs) == 1 else 's'}"
                + (f", queued behind the running task of session {session_id!r}" if queued else "")
            ),
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> Task:
        """A copy a command may change freely, at a fraction of ``copy.deepcopy``'s cost.

        Every container the command methods and events change in place is copied (the steps,
        their ``depends_on`` and ``context``, the task's ``context`` and ``inputs_params``,
        the pending events); values inside them (results, context values, trigger dicts) are
        only ever replaced, never changed in place, so they are shared.
        """
        clone = object.__new__(type(self))
        state = dict(self.__dict__)
        state["_pending_events"] = list(self._pending_events)
        state["context"] = dict(self.context)
        state["inputs_params"] = dict(self.inputs_params)
        steps = []
        new = object.__new__
        for step in self.steps:
            twin = new(Step)
            fields = dict(step.__dict__)
            fields["depends_on"] = list(step.depends_on)
            fields["context"] = dict(step.context)
            twin.__dict__ = fields
            steps.append(twin)
        state["steps"] = steps
        clone.__dict__.update(state)
        memo[id(self)] = clone
        return clone

    # -- reading ------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"task {self.task_id!r}"

    @property
    def running(self) -> bool:
        return self.status == _RUNNING

    @property
    def ended(self) -> bool:
        return self.status in _ENDED

    def index_of(self, step_id: str) -> int:
        for i, step in enumerate(self.steps):
            if step.step_id == step_id:
                return i
        raise NotFound(f"{self.label} has no step {step_id!r}")

    def step(self, step_id: str) -> Step:
        return self.steps[self.index_of(step_id)]

    def step_named(self, name: str) -> Step | None:
        for step in self.steps:
            if step.step_name == name:
                return step
        return None

    def dependencies_satisfied(self, step: Step) -> bool:
        depends_on = step.depends_on
        if not depends_on:
            return True
        # Names are unique within a task; a name no step has does not block.
        for other in self.steps:
            if other.status not in _SATISFIED and other.step_name in depends_on:
                return False
        return True

    def is_ready(self, step: Step) -> bool:
        """A pending step of a running task whose dependencies are all completed or skipped."""
        return self.running and step.status == _PENDING and self.dependencies_satisfied(step)

    def inherit_results(self, step: Step) -> None:
        """Puts the results of ``step``'s completed dependencies into its context, as
        StepCompleted does for the dependents a step has when it completes."""
        for name in step.depends_on:
            dependency = self.step_named(name)
            if (
                dependency is not None
                and dependency.status == _COMPLETED
                and dependency.result is not None
            ):
                step.context[name] = dependency.result

    def current_steps(self) -> list[Step]:
        return [s for s in self.steps if s.status == _CURRENT]

    def ready_steps(self) -> list[Step]:
        return [s for s in self.steps if self.is_ready(s)]

    def all_steps_finished(self) -> bool:
        return all(s.status in _DONE for s in self.steps)

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

    def start(self) -> None:
        TASK_LIFECYCLE.check("start", self.status, self.label)
        self.trigger_event(self.Started, display_message=f"Task {self.task_name!r} started")

    def start_step(self, step: Step) -> None:
        STEP_LIFECYCLE.check("start", step.status, step.label)
        if not self.is_ready(step):
            raise InvalidTransition(
                f"cannot start {step.label}: it is blocked by "
                + ", ".join(repr(d) for d in self._unsatisfied(step)),
                details={"rule": "step.start", "state": "blocked"},
            )
        self.trigger_event(
            self.StepStarted,
            step_id=step.step_id,
            parent_action_id=ids.new_action_id(),
            display_message=f"Step {step.step_name!r} is now in progress"
            + (f" (attempt {step.attempts + 1})" if step.attempts else ""),
        )

    def _unsatisfied(self, step: Step) -> list[str]:
        satisfied = {s.value for s in STEP_SATISFIED}
        by_name = {s.step_name: s for s in self.steps}
        return [d for d in step.depends_on if d in by_name and by_name[d].status not in satisfied]

    def start_first_ready(self) -> Step | None:
        """Makes the first ready step (in plan order) current; returns it, or None."""
        ready = self.ready_steps()
        if not ready:
            return None
        self.start_step(ready[0])
        return self.step(ready[0].step_id)

    def claim(self, step: Step, worker: str) -> None:
        if step.status != _CURRENT:
            raise InvalidTransition(f"cannot claim {step.label}: it is {step.status}")
        self.trigger_event(
            self.StepClaimed,
            step_id=step.step_id,
            worker=worker,
            display_message=f"Step {step.step_name!r} claimed by {worker!r}",
        )

    def complete_step(self, step: Step, result: Any = None) -> None:
        self.require_running("complete a step of")
        STEP_LIFECYCLE.check("complete", step.status, step.label)
        if step.status == _PENDING and not self.is_ready(step):
            raise InvalidTransition(
                f"cannot complete {step.label}: it is blocked by "
                + ", ".join(repr(d) for d in self._unsatisfied(step)),
                details={"rule": "step.complete", "state": "blocked"},
            )
        self._withdraw_trigger_of(step, "its step completed")
        self.trigger_event(
            self.StepCompleted,
            step_id=step.step_id,
            result=result,
            display_message=f"Step {step.step_name!r} completed",
        )

    def fail_step(self, step: Step, message: str | None) -> None:
        self.require_running("fail a step of")
        STEP_LIFECYCLE.check("fail", step.status, step.label)
        self._withdraw_trigger_of(step, "its step failed")
        self.trigger_event(
            self.StepFailed,
            step_id=step.step_id,
            message=message,
            display_message=f"Step {step.step_name!r} failed" + (f": {message}" if message else ""),
        )

    def skip_step(self, step: Step, message: str | None) -> None:
        self.require_running("skip a step of")
        STEP_LIFECYCLE.check("skip", step.status, step.label)
        self._withdraw_trigger_of(step, "its step was skipped")
        self.trigger_event(
            self.StepSkipped,
            step_id=step.step_id,
            message=message,
            display_message=f"Step {step.step_name!r} skipped"
            + (f": {message}" if message else ""),
        )

    def retry_step(self, step: Step) -> None:
        self.require_running("retry a step of")
        STEP_LIFECYCLE.check("retry", step.status, step.label)
        self.trigger_event(
            self.StepRetried,
            step_id=step.step_id,
            display_message=f"Step {step.step_name!r} will be retried",
        )

    def cancel_step(self, step: Step, reason: str | None) -> None:
        STEP_LIFECYCLE.check("cancel", step.status, step.label)
        self._withdraw_trigger_of(step, "its step was cancelled")
        self.trigger_event(
            self.StepCancelled,
            step_id=step.step_id,
            reason=reason,
            display_message=f"Step {step.step_name!r} cancelled"
            + (f": {reason}" if reason else ""),
        )

    def schedule_trigger(self, step: Step, fire_at: float, priority: int | None) -> dict[str, Any]:
        """Schedules a trigger for the current ``step``, replacing the pending one."""
        if step.status != _CURRENT:
            raise InvalidTransition(
                f"cannot schedule a trigger for {step.label}: it is {step.status}"
            )
        if self.trigger is not None:
            self.withdraw_trigger("replaced by a newer trigger")
        trigger = {
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
                "parent_action_id": step.parent_action_id,
                "step_name": step.step_name,
                "task_name": self.task_name,
            },
        }
        self.trigger_event(
            self.TriggerScheduled,
            trigger=trigger,
            display_message=f"Trigger scheduled for step {step.step_name!r}",
        )
        return trigger

    def withdraw_trigger(self, reason: str) -> None:
        if self.trigger is None:
            return
        self.trigger_event(
            self.TriggerWithdrawn,
            trigger_id=self.trigger["trigger_id"],
            reason=reason,
            display_message=f"Trigger withdrawn: {reason}",
        )

    def _withdraw_trigger_of(self, step: Step, reason: str) -> None:
        if self.trigger is not None and self.trigger["step_id"] == step.step_id:
            self.withdraw_trigger(reason)

    def add_context(self, key: str, value: Any) -> None:
        self.require_not_ended("add context to")
        self.trigger_event(
            self.ContextAdded, key=key, value=value, display_message=f"Context {key!r} added"
        )

    def end(self, verb: str, message: str | None) -> None:
        """Ends the task (``complete``, ``fail`` or ``cancel``), its steps as the contract says."""
        status = TASK_LIFECYCLE.check(verb, self.status, self.label)
        self.withdraw_trigger(f"the task ended ({status})")
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
                if step.status == _PENDING:
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

    def revise_plan(
        self,
        specs: list[StepSpec],
        ignored: list[str],
        goal: str | None,
        inputs_params: dict[str, Any] | None,
    ) -> dict[str, list[str]]:
        """Applies a checked plan: history stays, remaining steps are matched by name and kept,
        changed or cancelled as removed, new ones added. Returns the diff (step names)."""
        self.require_not_ended("replan")
        history = {s.value for s in STEP_HISTORY}
        remaining = {s.step_name: s for s in self.steps if s.status not in history}
        wanted = {spec.step_name for spec in specs}
        added: list[dict[str, Any]] = []
        changed: list[dict[str, Any]] = []
        next_index = len(self.steps)
        for spec in specs:
            existing = remaining.get(spec.step_name)
            if existing is None:
                added.append(_step_from_spec(self.task_id, next_index, spec))
                next_index += 1
            elif (
                existing.description,
                existing.action_instruction,
                existing.validation_instruction,
                existing.depends_on,
            ) != (
                spec.description,
                spec.action_instruction,
                spec.validation_instruction,
                list(spec.depends_on),
            ):
                changed.append({"step_id": existing.step_id, **spec.as_dict()})
        removed = [name for name in remaining if name not in wanted]
        # A current step that stays must not wait on an unfinished step afterwards.
        satisfied = {s.value for s in STEP_SATISFIED}
        status_after = {s.step_name: s.status for s in self.steps if s.step_name not in removed}
        status_after.update({r["step_name"]: _PENDING for r in added})
        for spec in specs:
            existing = remaining.get(spec.step_name)
            if existing is not None and existing.status == _CURRENT:
                blocking = [d for d in spec.depends_on if status_after.get(d) not in satisfied]
                if blocking:
                    raise InvalidPlan(
                        f"step {spec.step_name!r} is in progress and cannot depend on unfinished "
                        + ", ".join(map(repr, blocking)),
                        details={"step_name": spec.step_name, "blocking": blocking},
                    )
        diff = {
            "added": [r["step_name"] for r in added],
            "changed": [r["step_name"] for r in changed],
            "removed": removed,
        }
        parts = [f"{k} {', '.join(v)}" for k, v in diff.items() if v]
        self.trigger_event(
            self.PlanRevised,
            added=added,
            changed=changed,
            removed=removed,
            goal=goal,
            inputs_params=inputs_params,
            display_message="Plan revised: "
            + ("; ".join(parts) if parts else "no change")
            + (f" (ignored finished {', '.join(ignored)})" if ignored else ""),
        )
        for name in removed:
            step = remaining[name]
            self.cancel_step(self.step(step.step_id), "removed by a replan")
        return diff


class Session(Aggregate):
    """The agent or conversation tasks belong to: at most one running task, the rest queued."""

    TOPIC: ClassVar[str] = "baton:Session"

    class Event(Aggregate.Event):
        pass

    class Created(Aggregate.Created):
        TOPIC = "baton:Session.Created"
        session_id: str

    class TaskQueued(Event):
        TOPIC = "baton:Session.TaskQueued"
        task_id: str

        def apply(self, session: Session) -> None:
            session.queue.append(self.task_id)

    class TaskActivated(Event):
        TOPIC = "baton:Session.TaskActivated"
        task_id: str

        def apply(self, session: Session) -> None:
            session.running = self.task_id
            if self.task_id in session.queue:
                session.queue.remove(self.task_id)

    class TaskReleased(Event):
        TOPIC = "baton:Session.TaskReleased"
        task_id: str

        def apply(self, session: Session) -> None:
            if session.running == self.task_id:
                session.running = None
            if self.task_id in session.queue:
                session.queue.remove(self.task_id)

    class Snapshot(BaseSnapshot):
        TOPIC = "baton:Session.Snapshot"

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.running: str | None = None
        self.queue: list[str] = []

    @classmethod
    def create(cls, session_id: str) -> Session:
        return cls._create(cls.Created, id=ids.session_uuid(session_id), session_id=session_id)

    @property
    def busy(self) -> bool:
        return self.running is not None

    def admit(self, task_id: str) -> bool:
        """Admits a new task: running when the session is free (True), else queued (False)."""
        if self.running is None:
            self.trigger_event(self.TaskActivated, task_id=task_id)
            return True
        self.trigger_event(self.TaskQueued, task_id=task_id)
        return False

    def release(self, task_id: str) -> str | None:
        """Releases an ended task; activates and returns the next queued task, if any."""
        was_running = self.running == task_id
        self.trigger_event(self.TaskReleased, task_id=task_id)
        if was_running and self.queue:
            next_id = self.queue[0]
            self.trigger_event(self.TaskActivated, task_id=next_id)
            return next_id
        return None


class CommandRecord(Aggregate):
    """The first reply to a command that carried an id; a repeat gets it again."""

    TOPIC: ClassVar[str] = "baton:CommandRecord"

    class Created(Aggregate.Created):
        TOPIC = "baton:CommandRecord.Created"
        command_id: str
        subject: str
        reply: Any

    def __init__(self, command_id: str, subject: str, reply: Any) -> None:
        self.command_id = command_id
        self.subject = subject
        self.reply = reply

    @classmethod
    def create(cls, command_id: str, subject: str, reply: Any) -> CommandRecord:
        return cls._create(
            cls.Created,
            id=ids.command_uuid(command_id),
            command_id=command_id,
            subject=subject,
            reply=reply,
        )


def aggregate_uuid_of_task(task_id: str) -> UUID:
    return ids.task_uuid(task_id)


register_topic(Task.Snapshot.TOPIC, Task.Snapshot)
register_topic(Session.Snapshot.TOPIC, Session.Snapshot)
