"""The task view of the contract, rendered from a Task, and history entries from its events.

A task's context is given once, at the top of its view. A step's ``context`` in a task view is
what its completed dependencies produced (their results, by step name); a reply that returns
one step (a claim, a step command) gives that step the whole of what it sees: the task's
context with its dependencies' results over it. So a view grows with the plan, never with the
plan times the context.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import CanMutateAggregate

from baton.domain.model import Step, Task
from baton.domain.steps import COMPLETED, PENDING

_BASE_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "display_message", "originator_topic"}
)


def dependency_results(task: Task, step: Step) -> dict[str, Any]:
    """The results of ``step``'s completed dependencies, by step name."""
    results: dict[str, Any] = {}
    for name in step.depends_on:
        dependency = task.step_named(name)
        if (
            dependency is not None
            and dependency.status == COMPLETED
            and dependency.result is not None
        ):
            results[name] = dependency.result
    return results


def render_step(
    task: Task, step: Step, now: float | None, context: dict[str, Any]
) -> dict[str, Any]:
    status = step.status
    pending = status == PENDING
    satisfied = task.dependencies_satisfied(step)
    view: dict[str, Any] = {
        "task_id": task.task_id,
        "step_id": step.step_id,
        "step_index": step.step_index,
        "step_name": step.step_name,
        "description": step.description,
        "action_instruction": step.action_instruction,
        "validation_instruction": step.validation_instruction,
        "depends_on": list(step.depends_on),
        "status": status,
        "ready": task.is_ready(step, now),
        "blocked": pending and not satisfied,
        "attempts": step.attempts,
        "max_attempts": step.max_attempts,
        "context": context,
        "parent_action_id": step.parent_action_id,
    }
    if step.claimed_by is not None:
        view["claimed_by"] = step.claimed_by
    if step.claim_id is not None:
        view["claim_id"] = step.claim_id
        view["lease_expires_at"] = step.lease_expires_at
    if step.retry_at is not None and pending:
        view["retry_at"] = step.retry_at
    if step.result is not None:
        view["result"] = step.result
    if step.failure_message is not None:
        view["failure_message"] = step.failure_message
    return view


def step_view(task: Task, step: Step, now: float | None = None) -> dict[str, Any]:
    """One step as a reply returns it: with everything it sees in ``context``."""
    context = {**task.context, **dependency_results(task, step)}
    return render_step(task, step, now, context)


def task_header(task: Task) -> dict[str, Any]:
    """The task view without its steps, current step and trigger."""
    return {
        "task_id": task.task_id,
        "task_name": task.task_name,
        "task_instruction": task.task_instruction,
        "session_id": task.session_id,
        "status": task.status,
        "priority": task.priority,
        "goal": task.goal,
        "inputs_params": task.inputs_params,
        "context": task.context,
        "sequential": task.sequential,
        "version": task.version,
        "workspace": task.workspace,
        "created_at": task.created_at,
        "updated_at": task.modified_on.timestamp(),
        "message": task.message,
    }


def task_view(task: Task, now: float | None = None) -> dict[str, Any]:
    view = task_header(task)
    view["steps"] = [render_step(task, s, now, dependency_results(task, s)) for s in task.steps]
    if task.trigger is not None:
        view["trigger"] = dict(task.trigger)
    current = task.first_current()
    if current is not None:
        view["current_step"] = view["steps"][current.step_index]
    return view


def task_summary(task: Task) -> dict[str, Any]:
    counts = {s: n for s, n in task._counts.items() if n}
    current = task.first_current()
    return {
        "task_id": task.task_id,
        "task_name": task.task_name,
        "session_id": task.session_id,
        "status": task.status,
        "priority": task.priority,
        "version": task.version,
        "created_at": task.created_at,
        "updated_at": task.modified_on.timestamp(),
        "steps_total": len(task.steps),
        "steps_by_status": counts,
        "current_step": current.step_name if current else None,
    }


def event_type(event: CanMutateAggregate[Any]) -> str:
    return type(event).__name__


def history_entry(task_id: str, event: CanMutateAggregate[Any]) -> dict[str, Any]:
    """``{type, version, timestamp, step_id?, data, display_message}`` for one task event."""
    fields = vars(event)
    data = {k: v for k, v in fields.items() if k not in _BASE_FIELDS}
    if "trigger" in data and data["trigger"] is None:
        # A StepStarted that scheduled no trigger reads as it did before it could carry one.
        del data["trigger"]
    entry: dict[str, Any] = {
        "task_id": task_id,
        "type": event_type(event),
        "version": event.originator_version,
        "timestamp": event.timestamp.timestamp(),
        "data": data,
        "display_message": fields.get("display_message", ""),
    }
    if "step_id" in fields:
        entry["step_id"] = fields["step_id"]
    elif "trigger" in fields and isinstance(fields["trigger"], dict):
        entry["step_id"] = fields["trigger"].get("step_id")
    return entry
