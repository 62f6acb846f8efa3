"""Replanning a task: match a new plan against the task's steps and record the difference.

Rules (docs/contract.md, "Replanning"):
- History stays: completed, skipped, cancelled and failed steps are never changed or matched; a
  plan step named like one is ignored, and ``depends_on`` may name one.
- Remaining steps (pending, current) are matched by name: kept, changed, or cancelled when the
  new plan leaves them out. New names are added.
- In a dependency graph, a step may not depend on a cancelled step (it could never run): 400
  naming the dependency. In a sequential plan a cancelled step counts as done.
- A current step that stays may not wait on an unfinished step.
- No step still to run may be left waiting for ever. History (and what a replan cancels) keeps
  its dependencies, and in a sequential plan a finished step still waits for the steps it
  followed (so a skipped step does not release the one after it early). A replan that would
  leave a step still to run waiting on a cycle (a history step listed before one it followed;
  in a graph, a step made to depend on a failed step that waits on it) or, in a graph, on a
  cancelled step is refused: 400 naming the step, the path and the cycle or cancelled step.
- A failed step that the new plan leaves out and that no unfinished step depends on is skipped
  ("dropped by a replan"), so it does not hold its task open.
- A task holds at most ``MAX_STEPS`` steps, history included (413 beyond).
"""

from __future__ import annotations

from typing import Any

from baton.domain.errors import InvalidPlan, TooLarge
from baton.domain.lifecycle import STEP_HISTORY, STEP_SATISFIED
from baton.domain.limits import MAX_STEPS
from baton.domain.model import Task, step_record
from baton.domain.plans import Plan, StepSpec, find_cycle, is_sequential, resolve
from baton.domain.steps import CANCELLED, CURRENT, FAILED, PENDING, SKIPPED, Step
from baton.domain.task_state import DONE

HISTORY = frozenset(s.value for s in STEP_HISTORY)
_SATISFIED_FOR_CURRENT = frozenset(s.value for s in STEP_SATISFIED)


def _differs(step: Step, spec: StepSpec) -> bool:
    return (
        step.description,
        step.action_instruction,
        step.validation_instruction,
        list(step.depends_on),
        step.max_attempts,
        step.retry_delay_s,
    ) != (
        spec.description,
        spec.action_instruction,
        spec.validation_instruction,
        list(spec.depends_on),
        spec.max_attempts,
        spec.retry_delay_s,
    )


def _dropped_failures(
    task: Task, deps: dict[str, tuple[str, ...]], status: dict[str, str], listed: set[str]
) -> list[str]:
    """The failed steps a replan skips ("dropped by a replan"), in task order: each one the
    plan does not list and whose dependents (as the replan leaves them: ``deps`` and
    ``status``) are all done, counting the ones dropped, until no more can be (so a chain of
    failed steps left out goes whatever their order in the task). Updates ``status``."""
    dependents: dict[str, list[str]] = {}
    for name, needs in deps.items():
        for need in needs:
            dependents.setdefault(need, []).append(name)
    candidates = [
        s.step_name
        for s in task.steps
        if status[s.step_name] == FAILED and s.step_name not in listed
    ]
    undone = {
        name: sum(status[d] not in DONE for d in dependents.get(name, ())) for name in candidates
    }
    going = [name for name in candidates if not undone[name]]
    dropped: set[str] = set()
    while going:
        name = going.pop()
        status[name] = SKIPPED
        dropped.add(name)
        for need in deps.get(name, ()):
            if need in undone and need not in dropped:
                undone[need] -= 1
                if not undone[need]:
                    going.append(need)
    return [name for name in candidates if name in dropped]


def _refuse_a_stuck_step(
    deps: dict[str, tuple[str, ...]],
    to_run: list[str],
    status: dict[str, str],
    *,
    sequential: bool,
    removed: list[str],
) -> None:
    """Refuses a replan that would leave a step still to run waiting for ever.

    ``deps`` and ``status`` are the task as the replan leaves it; ``to_run`` its steps still
    to run (the plan's, in its order, then the failed steps that stay failed: a retry makes
    them pending). ``resolve`` refuses cycles among the plan's own steps, and a plan step may
    not name a cancelled step in a graph; history steps, and the steps the replan cancels, keep
    the dependencies they had, so a step can still end up waiting on what never comes:

    - in a sequential plan a step is satisfied once it is done *and* what it waits for is, so
      one that waits, through any chain, on a cycle never is;
    - in a graph a completed or skipped step is satisfied and a cancelled one never is, so a
      step that waits, through steps still to run, on a cancelled step or a cycle never is.

    A cycle nothing still to run waits on holds nothing up and is let be."""
    alive = set(to_run)

    def needs(name: str) -> tuple[str, ...]:
        if sequential:
            return deps.get(name, ())
        if name not in alive:  # done (cut) or cancelled (a dead end)
            return ()
        return tuple(d for d in deps.get(name, ()) if d in alive or status[d] == CANCELLED)

    parent: dict[str, str | None] = {}
    for root in to_run:
        if root in parent:
            continue
        parent[root] = None
        stack = [root]
        while stack:
            name = stack.pop()
            for need in needs(name):
                if need not in parent:
                    parent[need] = name
                    stack.append(need)

    def path_to(name: str) -> list[str]:
        via = [name]
        while (up := parent[via[0]]) is not None:
            via.insert(0, up)
        return via

    dead = None if sequential else next((n for n in parent if n not in alive), None)
    if dead is not None:
        via = path_to(dead)
        if dead in removed:
            advice = "Keep in the plan the step it would cancel, or skip the step that waits on it"
        else:
            advice = f"Skip the failed step {via[-2]!r}, or do not make a step depend on it"
        raise InvalidPlan(
            f"this plan would leave step {via[0]!r} waiting (through {' -> '.join(via)}) on "
            f"cancelled step {dead!r}, which will never run: a history step keeps the "
            f"dependencies it had. {advice}",
            details={"waiting": via[0], "via": via, "cancelled": dead},
        )
    cycle = find_cycle({name: needs(name) for name in parent})
    if not cycle:
        return
    via = path_to(cycle[0])
    waiting = via[0]
    history = [n for n in dict.fromkeys(cycle) if status[n] in HISTORY]
    path = f" (through {' -> '.join(via)})" if len(via) > 1 else ""
    if sequential:
        rule = "in a sequential plan a step waits until what it follows is done"
        advice = "List a history step after the steps it followed, or keep in the plan a step "
        advice += "it would cancel"
    else:
        rule = "nothing on it can run first"
        advice = "Skip the failed step, or do not make a step depend on one that waits on it"
    raise InvalidPlan(
        f"this plan would leave step {waiting!r} waiting{path} on the dependency cycle "
        f"{' -> '.join(cycle)}, which can never be satisfied: {rule}, and the steps on it this "
        f"plan does not revise ({', '.join(map(repr, history))}) keep the dependencies they "
        f"had. {advice}",
        details={"waiting": waiting, "via": via, "cycle": cycle, "history": history},
    )


def revise_plan(task: Task, plan: Plan) -> dict[str, list[str]]:
    """Applies ``plan`` to ``task`` (events only after every check passed); returns the diff
    as step names: ``{added, changed, removed}``."""
    task.require_not_ended("replan")
    history = {s.step_name: s for s in task.steps if s.status in HISTORY}
    specs = resolve(plan, history=history)
    sequential = is_sequential(plan)
    ignored = [s.step_name for s in plan.steps if s.step_name in history]
    remaining = {s.step_name: s for s in task.steps if s.status not in HISTORY}
    wanted = {spec.step_name for spec in specs}

    if not sequential:
        for spec in specs:
            cancelled = [
                d for d in spec.depends_on if d in history and history[d].status == CANCELLED
            ]
            if cancelled:
                raise InvalidPlan(
                    f"step {spec.step_name!r} depends on cancelled step"
                    f"{'s' if len(cancelled) > 1 else ''} {', '.join(map(repr, cancelled))}, "
                    "which will never run",
                    details={"step_name": spec.step_name, "cancelled": cancelled},
                )

    added: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    next_index = len(task.steps)
    previous_added: str | None = None
    for spec in specs:
        existing = remaining.get(spec.step_name)
        if existing is None:
            record = step_record(spec, next_index, sequential=False)
            if sequential and list(spec.depends_on) == ([previous_added] if previous_added else []):
                record.pop("depends_on", None)  # implied: the step added before it
            added.append(record)
            previous_added = spec.step_name
            next_index += 1
        elif _differs(existing, spec):
            changed.append({"step_id": existing.step_id, **spec.as_dict()})
    if next_index > MAX_STEPS:
        raise TooLarge(
            f"a task holds at most {MAX_STEPS} steps, history included; this replan would "
            f"make {next_index}",
            details={"steps": next_index, "limit": MAX_STEPS},
        )
    removed = [name for name in remaining if name not in wanted]
    # The task as this replan leaves it: every step's dependencies and status.
    deps_after = {s.step_name: tuple(s.depends_on) for s in task.steps}
    deps_after.update({spec.step_name: spec.depends_on for spec in specs})
    status_after = {s.step_name: s.status for s in task.steps}
    status_after.update(dict.fromkeys(removed, CANCELLED))
    status_after.update({r["step_name"]: PENDING for r in added})
    listed = {s.step_name for s in plan.steps}
    dropped = _dropped_failures(task, deps_after, status_after, listed)
    # A current step's dependencies are plan steps or history it keeps waiting on (so not
    # cancelled or dropped by this replan): their status after it is their status now.
    for spec in specs:
        existing = remaining.get(spec.step_name)
        if existing is not None and existing.status == CURRENT:
            blocking = [d for d in spec.depends_on if status_after[d] not in _SATISFIED_FOR_CURRENT]
            if sequential:
                blocking = [d for d in blocking if status_after[d] != CANCELLED]
            if blocking:
                raise InvalidPlan(
                    f"step {spec.step_name!r} is in progress and cannot depend on unfinished "
                    + ", ".join(map(repr, blocking)),
                    details={"step_name": spec.step_name, "blocking": blocking},
                )
    failing = [s.step_name for s in task.steps if status_after[s.step_name] == FAILED]
    _refuse_a_stuck_step(
        deps_after,
        [spec.step_name for spec in specs] + failing,
        status_after,
        sequential=sequential,
        removed=removed,
    )

    diff = {
        "added": [r["step_name"] for r in added],
        "changed": [r["step_name"] for r in changed],
        "removed": removed,
    }
    parts = [f"{k} {', '.join(v)}" for k, v in diff.items() if v]
    task.trigger_event(
        task.PlanRevised,
        added=added,
        changed=changed,
        removed=removed,
        goal=plan.goal,
        inputs_params=plan.inputs_params,
        sequential=sequential if sequential != task.sequential else None,
        display_message="Plan revised: "
        + ("; ".join(parts) if parts else "no change")
        + (f" (ignored finished {', '.join(ignored)})" if ignored else ""),
    )
    for name in removed:
        task.cancel_step(remaining[name], "removed by a replan")
    for name in dropped:
        task.skip_step(history[name], "dropped by a replan; nothing depends on it")
    if plan.context:
        for key, value in plan.context.items():
            task.add_context(key, value)
    return diff
