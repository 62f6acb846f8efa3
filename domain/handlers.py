"""The command handlers: one named function per command of the contract, and their table.

Each handler gets the application (its clock, workspace, ready-work index, lease default) and
a unit of work, loads what it needs through the unit of work, calls the aggregates' command
methods, and returns the reply. Nothing here saves: ``BatonApp`` commits the unit of work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from baton.domain import commands as c
from baton.domain import ids
from baton.domain.errors import InvalidRequest
from baton.domain.model import Session, Step, Task
from baton.domain.plans import Plan, is_sequential, resolve
from baton.domain.replan import revise_plan
from baton.domain.steps import CURRENT, FAILED, PENDING
from baton.domain.views import step_view, task_view

if TYPE_CHECKING:
    from baton.domain.services import BatonApp, UnitOfWork

Reply = Any
#: How many candidate tasks an unscoped claim looks at (the ready-work index orders them).
CLAIM_CANDIDATES = 5


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
            following.start_first_ready(uow.now)
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
    task_id = ids.new_task_id(cmd.task_name, timed=app.timed_ids)
    session_id = cmd.session_id or task_id
    # A task without a session is its own, new session: nothing to look up (a store read that
    # finds nothing, a third of a create). Should the new id be taken, the task's and the
    # session's first events both conflict on save, and the command runs again with another.
    session = uow.session(session_id) if cmd.session_id else None
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
        sequential=is_sequential(plan),
        goal=plan.goal,
        inputs_params=plan.inputs_params,
        context=plan.context,
        queued=not running,
        workspace=workspace,
        created_at=uow.now,
    )
    uow.add(task)
    if running:
        task.start_first_ready(uow.now)
    if app.workspace is not None:
        ws = app.workspace
        uow.after_commit.append(lambda: ws.create(task_id))
    return task_view(task, uow.now)


def _schedule(
    uow: UnitOfWork, task: Task, step: Step, delay_s: float, priority: int | None
) -> Reply:
    task.schedule_trigger(step, uow.now + delay_s, priority)
    return _queued(uow, task, step)


def _queued(uow: UnitOfWork, task: Task, step: Step) -> Reply:
    """The reply for ``step`` once its trigger is the task's: scheduled alone (``_schedule``)
    or with the step's start (``start_first_ready`` with ``fire_at``). The trigger is a copy
    down to its payload: the reply is the caller's, the task's trigger is not."""
    trigger = task.trigger
    assert trigger is not None
    copy = {**trigger, "payload": dict(trigger["payload"])}
    return {"status": "queued", "step": step_view(task, step, uow.now), "trigger": copy}


def start_task(app: BatonApp, uow: UnitOfWork, cmd: c.StartTask) -> Reply:
    task = uow.task(cmd.task_id)
    task.require_running("start")
    step = task.first_current()
    if step is not None:
        return _schedule(uow, task, step, cmd.delay_s, cmd.priority)
    step = task.start_first_ready(uow.now, fire_at=uow.now + cmd.delay_s, priority=cmd.priority)
    if step is None:
        return {"status": "no_next_step", "step": None, "trigger": None}
    return _queued(uow, task, step)


def _advance(app: BatonApp, uow: UnitOfWork, task: Task, plan: Plan | None) -> Reply:
    """Completes the step being worked on (the first current one), applies ``plan`` if given,
    and makes the next ready step current with a trigger. The completion comes first, so a
    new plan that leaves out the finished step does not cancel it, and no other step is
    completed on its behalf."""
    task.require_running("advance")
    current = task.first_current()
    if current is not None:
        task.complete_step(current)
    if plan is not None:
        revise_plan(task, plan)
    if _finish_if_done(app, uow, task):
        return {"status": "completed", "step": None, "trigger": None}
    step = task.start_first_ready(uow.now, fire_at=uow.now)
    if step is not None:
        return _queued(uow, task, step)
    if current is None:
        step = task.first_current()
    if step is None:
        return {"status": "no_next_step", "step": None, "trigger": None}
    return _schedule(uow, task, step, 0.0, None)


def next_step(app: BatonApp, uow: UnitOfWork, cmd: c.NextStep) -> Reply:
    task = uow.task(cmd.task_id)
    plan = _require_plan(cmd.plan, "a replan") if (cmd.plan is not None or cmd.replan) else None
    return _advance(app, uow, task, plan)


def replan_task(app: BatonApp, uow: UnitOfWork, cmd: c.ReplanTask) -> Reply:
    task = uow.task(cmd.task_id)
    plan = _require_plan(cmd.plan, "a replan")
    advanced = None
    if cmd.advance_next:
        advanced = _advance(app, uow, task, plan)
        diff = _diff_of_replan(task)
    else:
        task.require_not_ended("replan")
        had_current = task.first_current() is not None
        diff = revise_plan(task, plan)
        finished = _finish_if_done(app, uow, task)
        if not finished and had_current and task.running and task.first_current() is None:
            task.start_first_ready(uow.now)
    view = task_view(task, uow.now)
    view["diff"] = diff
    if advanced is not None:
        view["advance"] = {"status": advanced["status"], "trigger": advanced["trigger"]}
    return view


def _diff_of_replan(task: Task) -> dict[str, list[str]]:
    """The diff of the PlanRevised event this command recorded."""
    for event in reversed(task.pending_events):
        if isinstance(event, Task.PlanRevised):
            return {
                "added": [r["step_name"] for r in event.added],
                "changed": [r["step_name"] for r in event.changed],
                "removed": list(event.removed),
            }
    return {"added": [], "changed": [], "removed": []}  # pragma: no cover


def _end(app: BatonApp, uow: UnitOfWork, task_id: str, verb: str, message: str | None) -> Reply:
    task = uow.task(task_id)
    task.end(verb, message)
    _after_end(app, uow, task)
    return task_view(task, uow.now)


def complete_task(app: BatonApp, uow: UnitOfWork, cmd: c.CompleteTask) -> Reply:
    return _end(app, uow, cmd.task_id, "complete", cmd.message)


def fail_task(app: BatonApp, uow: UnitOfWork, cmd: c.FailTask) -> Reply:
    return _end(app, uow, cmd.task_id, "fail", cmd.message)


def cancel_task(app: BatonApp, uow: UnitOfWork, cmd: c.CancelTask) -> Reply:
    return _end(app, uow, cmd.task_id, "cancel", cmd.reason)


def add_context(app: BatonApp, uow: UnitOfWork, cmd: c.AddContext) -> Reply:
    task = uow.task(cmd.task_id)
    task.add_context(cmd.key, cmd.value)
    return task_view(task, uow.now)


# -- claiming ---------------------------------------------------------------------------------


def urgency(task: Task, step: Step) -> tuple[int, float, float, str, int]:
    """Most urgent first: priority, then fire_at, then age — the queue view's order too. A
    step's pending trigger sets its priority and fire_at; otherwise its task does."""
    trigger = task.trigger
    if trigger is not None and trigger["step_id"] == step.step_id:
        priority, fire_at = int(trigger["priority"]), float(trigger["fire_at"])
    else:
        priority, fire_at = task.priority, task.created_at
    return (priority, fire_at, task.created_at, task.task_id, step.step_index)


def most_urgent(task: Task, now: float) -> Step | None:
    """The task's most urgent claimable step: its first claimable one in plan order, or the
    step its pending trigger names, whichever comes first by ``urgency``."""
    first = task.first_claimable(now)
    trigger = task.trigger
    if trigger is not None:
        named = task._by_id.get(trigger["step_id"])
        claimable = named is not None and (
            (named.status == CURRENT and named.claimed_by is None) or task.is_ready(named, now)
        )
        if claimable and (first is None or urgency(task, named) < urgency(task, first)):  # type: ignore[arg-type]
            return named
    return first


def idle_status(tasks: list[Task]) -> str:
    """``failed``, ``blocked`` or ``done`` for a scope with nothing to hand out."""
    live = [t for t in tasks if t.running]
    if any(t.count(FAILED) for t in live):
        return "failed"
    if any(t.count(PENDING) or t.count(CURRENT) for t in live):
        return "blocked"
    if any(t.status == "queued" for t in tasks):
        return "blocked"
    return "done"


def _claim_in(
    app: BatonApp,
    uow: UnitOfWork,
    *,
    task_id: str | None,
    session_id: str | None,
    worker: str | None,
    lease_s: float | None,
) -> Reply:
    now = uow.now
    if task_id is not None:
        scope: list[Task] = [uow.task(task_id)]
    elif session_id is not None:
        session = uow.session(session_id)
        scope = [uow.task(session.running)] if session and session.running else []
    elif app.ready_work is not None:
        scope = [uow.task(t) for t in app.ready_work.candidate_tasks(None, CLAIM_CANDIDATES)]
    else:
        raise InvalidRequest("step.claim needs a session_id or a task_id here")
    best: tuple[Task, Step] | None = None
    for task in scope:
        step = most_urgent(task, now)
        if step is not None and (best is None or urgency(task, step) < urgency(*best)):
            best = (task, step)
    if best is not None:
        task, step = best
        if step.status == PENDING:
            task.start_step(step, now)
        task.claim(step, worker or "anonymous", now, lease_s or app.default_lease_s)
        return {"step": step_view(task, step, now), "queue_status": "in_progress"}
    if task_id is None and session_id is None and app.ready_work is not None:
        status = app.ready_work.idle_status(None)
    else:
        status = idle_status(scope)
    return {"step": None, "queue_status": status}


def claim_step(app: BatonApp, uow: UnitOfWork, cmd: c.ClaimStep) -> Reply:
    return _claim_in(
        app,
        uow,
        task_id=cmd.task_id,
        session_id=cmd.session_id,
        worker=cmd.worker,
        lease_s=cmd.lease_s,
    )


def _step_reply(uow: UnitOfWork, task: Task, step: Step) -> Reply:
    return {**step_view(task, step, uow.now), "task_status": task.status}


def complete_step(app: BatonApp, uow: UnitOfWork, cmd: c.CompleteStep) -> Reply:
    task = uow.task(cmd.task_id)
    step = task.step(cmd.step_id)
    task.check_claim(step, cmd.claim_id)
    task.complete_step(step, cmd.result)
    _finish_if_done(app, uow, task)
    reply = _step_reply(uow, task, step)
    if cmd.claim_next:
        reply["next"] = _claim_in(
            app,
            uow,
            task_id=None if cmd.session_id else cmd.task_id,
            session_id=cmd.session_id,
            worker=cmd.worker or step.claimed_by,
            lease_s=cmd.lease_s,
        )
    return reply


def fail_step(app: BatonApp, uow: UnitOfWork, cmd: c.FailStep) -> Reply:
    task = uow.task(cmd.task_id)
    step = task.step(cmd.step_id)
    task.check_claim(step, cmd.claim_id)
    task.fail_step(step, cmd.message, uow.now)
    _finish_if_done(app, uow, task)
    return _step_reply(uow, task, step)


def skip_step(app: BatonApp, uow: UnitOfWork, cmd: c.SkipStep) -> Reply:
    task = uow.task(cmd.task_id)
    step = task.step(cmd.step_id)
    task.check_claim(step, cmd.claim_id)
    task.skip_step(step, cmd.message)
    _finish_if_done(app, uow, task)
    return _step_reply(uow, task, step)


def retry_step(app: BatonApp, uow: UnitOfWork, cmd: c.RetryStep) -> Reply:
    task = uow.task(cmd.task_id)
    step = task.step(cmd.step_id)
    task.retry_step(step, cmd.message)
    return _step_reply(uow, task, step)


def heartbeat_step(app: BatonApp, uow: UnitOfWork, cmd: c.HeartbeatStep) -> Reply:
    task = uow.task(cmd.task_id)
    step = task.step(cmd.step_id)
    task.renew(step, cmd.claim_id, uow.now, cmd.lease_s or app.default_lease_s)
    return _step_reply(uow, task, step)


def expire_claim(app: BatonApp, uow: UnitOfWork, cmd: c.ExpireClaim) -> Reply:
    task = uow.task(cmd.task_id)
    step = task.step(cmd.step_id)
    expired = task.expire_claim(step, cmd.claim_id, uow.now)
    if expired:
        _finish_if_done(app, uow, task)
    return {"expired": expired, "step": step_view(task, step, uow.now)}


HANDLERS: dict[type[c.Command], Callable[[BatonApp, UnitOfWork, Any], Reply]] = {
    c.CreateTask: create_task,
    c.StartTask: start_task,
    c.NextStep: next_step,
    c.ReplanTask: replan_task,
    c.CompleteTask: complete_task,
    c.FailTask: fail_task,
    c.CancelTask: cancel_task,
    c.AddContext: add_context,
    c.ClaimStep: claim_step,
    c.CompleteStep: complete_step,
    c.FailStep: fail_step,
    c.SkipStep: skip_step,
    c.RetryStep: retry_step,
    c.HeartbeatStep: heartbeat_step,
    c.ExpireClaim: expire_claim,
}
