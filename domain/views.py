"""The task view of the contract, rendered from a Task, and history entries from its events."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import CanMutateAggregate

from baton.domain.lifecycle import StepStatus
from baton.domain.model import Step, Task

_PENDING = StepStatus.PENDING.value
_BASE_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "display_message", "originator_topic"}
)


def step_view(task: Task, step: Step) -> dict[str, Any]:
    status = step.status
    pending = status == _PENDING
    satisfied = task.dependencies_satisfied(step)  # what is_ready and blocked both need
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
        "ready": pending and satisfied and task.running,
        "blocked": pending and not satisfied,
        "attempts": step.attempts,
        "context": dict(step.context),
        "parent_action_id": step.parent_action_id,
    }
    if step.claimed_by is not None:
        view["claimed_by"] = step.claimed_by
    if step.result is not None:
        view["result"] = step.result
    if step.failure_message is not None:
        view["failure_message"] = step.failure_message
    return view


def task_view(task: Task) -> dict[str, Any]:
    current = task.current_steps()
    view: dict[str, Any] = {
        "task_id": task.task_id,
        "task_name": task.task_name,
        "task_instruction": task.task_instruction,
        "session_id": task.session_id,
        "status": task.status,
        "priority": task.priority,
        "goal": task.goal,
        "inputs_params": dict(task.inputs_params),
        "context": dict(task.context),
        "version": task.version,
        "workspace": task.workspace,
        "created_at": task.created_at,
        "updated_at": task.modified_on.timestamp(),
        "message": task.message,
        "steps": [step_view(task, s) for s in task.steps],
    }
    if task.trigger is not None:
        view["trigger"] = dict(task.trigger)
    if current:
        view["current_step"] = step_view(task, current[0])
    return view


def task_summary(task: Task) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for step in task.steps:
        counts[step.status] = counts.get(step.status, 0) + 1
    current = task.current_steps()
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
        "current_step": current[0].step_name if current else None,
    }


def event_type(event: CanMutateAggregate[Any]) -> str:
    return type(event).__name__


def history_entry(task_id: str, event: CanMutateAggregate[Any]) -> dict[str, Any]:
    """``{type, version, timestamp, step_id?, data, display_message}`` for one task event."""
    fields = vars(event)
    data = {k: v for k, v in fields.items() if k not in _BASE_FIELDS}
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
