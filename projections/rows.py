"""View rows rendered from a Task's state: pure functions, the same live and on a rebuild.

A task is stored as a header row (its fields, counters, trigger and current step index; its
context in a column of its own, written only when it changes) and one row per step, so an event
rewrites the rows of the steps it changed, not the task.
"""

from __future__ import annotations

from typing import Any

from baton.domain import codec
from baton.domain.handlers import urgency
from baton.domain.model import Step, Task
from baton.domain.steps import CURRENT, FAILED, PENDING
from baton.domain.views import dependency_results, render_step, task_header, task_summary


def dumps(value: Any) -> str:
    return codec.dumps(value)


def task_row(task: Task, seq: int, context_json: str) -> tuple[Any, ...]:
    """``baton_tasks``: the task's header, counters, trigger and summary."""
    header = task_header(task)
    del header["context"]
    current = task.first_current()
    return (
        task.task_id,
        seq,
        task.session_id,
        task.status,
        task.priority,
        task.created_at,
        task.modified_on.timestamp(),
        task.version,
        int(task.count(FAILED) > 0),
        int(task.count(PENDING) + task.count(CURRENT) > 0),
        dumps(header),
        context_json,
        None if task.trigger is None else dumps(task.trigger),
        None if current is None else current.step_index,
        dumps(task_summary(task)),
    )


def step_json(task: Task, step: Step) -> str:
    """A step as the task view shows it (readiness as of no particular time: a step waiting
    out its retry delay is shown not ready, with its ``retry_at``)."""
    return dumps(render_step(task, step, None, dependency_results(task, step)))


def claimable(task: Task, step: Step) -> bool:
    """Ready (perhaps after its retry delay), or current and unclaimed, in a running task."""
    return task.running and task.holds_claimable(step)


def ready_row(task: Task, step: Step, rendered: str) -> tuple[Any, ...]:
    """``baton_ready_steps``: a claimable step with its ordering keys."""
    priority, fire_at, created_at, _, index = urgency(task, step)
    extra = dumps({"session_id": task.session_id, "priority": priority, "fire_at": fire_at})
    # The queue's item: the step's view plus its ranking, joined without re-parsing.
    item = rendered[:-1] + "," + extra[1:]
    return (
        step.step_id,
        task.task_id,
        task.session_id,
        priority,
        fire_at,
        created_at,
        index,
        step.retry_at or 0.0,
        item,
    )


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


def lease_row(task: Task, step: Step) -> tuple[Any, ...] | None:
    """``baton_claim_leases``: a held claim of a running task and when its lease runs out."""
    if (
        not task.running
        or step.status != CURRENT
        or step.claim_id is None
        or step.lease_expires_at is None
    ):
        return None
    return (step.step_id, task.task_id, step.claim_id, step.lease_expires_at)
