"""View rows rendered from a Task's state: pure functions, the same live and on a rebuild."""

from __future__ import annotations

from typing import Any

from baton.domain import codec
from baton.domain.lifecycle import StepStatus
from baton.domain.model import Step, Task
from baton.domain.views import step_view, task_summary, task_view

_OPEN = {StepStatus.PENDING.value, StepStatus.CURRENT.value}


def dumps(value: Any) -> str:
    return codec.dumps(value)


def task_row(task: Task, seq: int) -> tuple[Any, ...]:
    """``baton_tasks``: one row per task, with its full view and its summary."""
    return (
        task.task_id,
        seq,
        task.session_id,
        task.status,
        task.priority,
        task.created_at,
        task.modified_on.timestamp(),
        task.version,
        int(any(s.status == StepStatus.FAILED.value for s in task.steps)),
        int(any(s.status in _OPEN for s in task.steps)),
        dumps(task_view(task)),
        dumps(task_summary(task)),
    )


def _urgency(task: Task, step: Step) -> tuple[int, float]:
    """A step's priority and fire_at: its pending trigger's, else its task's."""
    trigger = task.trigger
    if trigger is not None and trigger.get("step_id") == step.step_id:
        return int(trigger["priority"]), float(trigger["fire_at"])
    return task.priority, task.created_at


def claimable(task: Task, step: Step) -> bool:
    """Ready, or current and unclaimed, in a running task."""
    if not task.running:
        return False
    if step.status == StepStatus.CURRENT.value:
        return step.claimed_by is None
    return task.is_ready(step)


def ready_rows(task: Task) -> list[tuple[Any, ...]]:
    """``baton_ready_steps``: the task's claimable steps with their ordering keys."""
    rows = []
    for step in task.steps:
        if not claimable(task, step):
            continue
        priority, fire_at = _urgency(task, step)
        view = step_view(task, step)
        view.update(session_id=task.session_id, priority=priority, fire_at=fire_at)
        rows.append(
            (
                step.step_id,
                task.task_id,
                task.session_id,
                priority,
                fire_at,
                task.created_at,
                step.step_index,
                dumps(view),
            )
        )
    return rows


def trigger_row(task: Task) -> tuple[Any, ...] | None:
    """``baton_pending_triggers``: the task's pending trigger, if any (without the flag)."""
    trigger = task.trigger
    if trigger is None:
        return None
    return (
        task.task_id,
        trigger["trigger_id"],
        task.session_id,
        int(trigger["priority"]),
        float(trigger["fire_at"]),
        dumps(trigger),
    )
