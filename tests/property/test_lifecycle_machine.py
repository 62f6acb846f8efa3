"""Random command sequences against a simple reference model of the contract.

The model is plain data (a status, attempts, claim and context per step, the step the pending
trigger is for) updated as the contract words it. After every command the application's views
must agree with it, and these laws hold:

- Without claims, a task never has more than one current step, whatever its plan: only create,
  start, next, a replan that removed the current step and a session handing over start a step,
  and each of them does so only when no step is current. (With claims a sequential plan can have
  two: skipping a blocked step makes the one after it ready while an earlier one is current,
  which the contract allows, since a step depends only on the one before it.)
- No step is current while one of its dependencies is neither completed nor skipped.
- A rejected command changes no version and appends no notification.
- A running task always has a step that is not completed, skipped or cancelled; a task that
  completed by itself has every step completed, skipped or cancelled, none failed.
- Rebuilding a task from its stored events (bypassing the cache, or a fresh app on the same
  SQLite file) gives the same view as the live aggregate.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from baton.domain import commands as c
from baton.domain.errors import BatonError
from baton.domain.services import BatonApp

NAMES = ["a", "b", "c", "d", "e", "f"]
DESCRIPTIONS = ["x", "y"]
SATISFIED = {"completed", "skipped"}
FINISHED = {"completed", "skipped", "cancelled"}
HISTORY = FINISHED | {"failed"}
#: Triggers fire far after any task's creation, so a triggered step is the least urgent.
CLOCK_NOW = 4_000_000_000.0

PlanSteps = list[tuple[str, str, list[str] | None]]  # (name, description, depends_on or None)


# --- the reference model ----------------------------------------------------------------------


@dataclass
class RefStep:
    name: str
    description: str
    deps: list[str]
    status: str = "pending"
    attempts: int = 0
    claimed_by: str | None = None
    result: Any = None
    context: dict[str, Any] = field(default_factory=dict)


class Ref:
    """What the contract says one task looks like."""

    def __init__(self, plan: PlanSteps) -> None:
        self.status = "running"
        self.steps: dict[str, RefStep] = {}
        self.context: dict[str, Any] = {}
        self.trigger: str | None = None
        self.ended_by_itself = False
        for name, description, deps in _resolve(plan):
            self.steps[name] = RefStep(name, description, deps)
        self.start_first_ready()

    @property
    def running(self) -> bool:
        return self.status == "running"

    def ready(self, s: RefStep) -> bool:
        return (
            self.running
            and s.status == "pending"
            and all(self.steps[d].status in SATISFIED for d in s.deps if d in self.steps)
        )

    def current(self) -> list[RefStep]:
        return [s for s in self.steps.values() if s.status == "current"]

    def first_ready(self) -> RefStep | None:
        return next((s for s in self.steps.values() if self.ready(s)), None)

    def start(self, s: RefStep) -> None:
        s.status, s.attempts, s.claimed_by = "current", s.attempts + 1, None

    def start_first_ready(self) -> RefStep | None:
        s = self.first_ready()
        if s is not None:
            self.start(s)
        return s

    def leave(self, s: RefStep, status: str) -> None:
        if self.trigger == s.name:
            self.trigger = None
        s.status = status

    def complete(self, s: RefStep, result: Any) -> None:
        self.leave(s, "completed")
        s.result = result
        if result is not None:
            for other in self.steps.values():
                if s.name in other.deps:
                    other.context[s.name] = result

    def inherit(self, s: RefStep) -> None:
        for d in s.deps:
            dep = self.steps.get(d)
            if dep is not None and dep.status == "completed" and dep.result is not None:
                s.context[d] = dep.result

    def end(self, verb: str) -> None:
        self.trigger = None
        for s in self.current():
            s.status = {"complete": "completed", "fail": "failed", "cancel": "cancelled"}[verb]
        if verb == "cancel":
            for s in self.steps.values():
                if s.status == "pending":
                    s.status = "cancelled"
        self.status = {"complete": "completed", "fail": "error", "cancel": "cancelled"}[verb]

    def finish_if_done(self) -> bool:
        if self.running and all(s.status in FINISHED for s in self.steps.values()):
            self.end("complete")
            self.ended_by_itself = True
            return True
        return False

    def advance(self) -> tuple[str, str | None]:
        current = self.current()
        if current:
            self.complete(current[0], None)
        if self.finish_if_done():
            return "completed", None
        s = self.start_first_ready()
        if s is None:
            return "no_next_step", None
        self.trigger = s.name
        return "queued", s.name

    def claimable(self) -> list[RefStep]:
        if not self.running:
            return []
        steps = [
            s
            for s in self.steps.values()
            if (s.status == "current" and s.claimed_by is None) or self.ready(s)
        ]
        order = list(self.steps)
        return sorted(steps, key=lambda s: (self.trigger == s.name, order.index(s.name)))

    def idle_status(self) -> str:
        if not self.running:
            return "done"
        if any(s.status == "failed" for s in self.steps.values()):
            return "failed"
        if any(s.status in ("pending", "current") for s in self.steps.values()):
            return "blocked"
        return "done"

    # replan ------------------------------------------------------------------------------
    def replan_error(self, plan: PlanSteps) -> int | None:
        history = {n for n, s in self.steps.items() if s.status in HISTORY}
        if _plan_error(plan, history):
            return 400
        specs = [spec for spec in _resolve(plan) if spec[0] not in history]
        remaining = {n: s for n, s in self.steps.items() if s.status not in HISTORY}
        wanted = {n for n, _, _ in specs}
        after = {n: s.status for n, s in self.steps.items() if n not in remaining or n in wanted}
        after.update({n: "pending" for n, _, _ in specs if n not in remaining})
        for name, _, deps in specs:
            current = name in remaining and remaining[name].status == "current"
            if current and any(after.get(d) not in SATISFIED for d in deps):
                return 400
        return None

    def replan(self, plan: PlanSteps) -> dict[str, list[str]]:
        history = {n for n, s in self.steps.items() if s.status in HISTORY}
        specs = [spec for spec in _resolve(plan) if spec[0] not in history]
        remaining = {n: s for n, s in self.steps.items() if s.status not in HISTORY}
        wanted = {n for n, _, _ in specs}
        had_current = bool(self.current())
        diff: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for name, description, deps in specs:
            existing = remaining.get(name)
            if existing is not None and (existing.description, existing.deps) != (
                description,
                deps,
            ):
                existing.description, existing.deps = description, deps
                self.inherit(existing)
                diff["changed"].append(name)
        for name, description, deps in specs:
            if name not in remaining:
                added = RefStep(name, description, deps, context=dict(self.context))
                self.steps[name] = added
                self.inherit(added)
                diff["added"].append(name)
        for name, s in remaining.items():
            if name not in wanted:
                self.leave(s, "cancelled")
                diff["removed"].append(name)
        if had_current and self.running and not self.current():
            self.start_first_ready()
        return diff


def _resolve(plan: PlanSteps) -> list[tuple[str, str, list[str]]]:
    sequential = all(deps is None for _, _, deps in plan)
    out = []
    for i, (name, description, deps) in enumerate(plan):
        if sequential:
            resolved = [plan[i - 1][0]] if i else []
        else:
            resolved = list(dict.fromkeys(deps or []))
        out.append((name, description, resolved))
    return out


def _plan_error(plan: PlanSteps, history: set[str]) -> bool:
    names = [n for n, _, _ in plan]
    if not names or len(set(names)) != len(names):
        return True
    specs = _resolve(plan)
    for name, _, deps in specs:
        if name in deps or any(d not in names and d not in history for d in deps):
            return True
    # A cycle among the steps that are not history: peel off steps with no unpeeled dependency.
    graph = {n: [d for d in deps if d in names and d not in history] for n, _, deps in specs}
    graph = {n: deps for n, deps in graph.items() if n not in history}
    done: set[str] = set()
    while True:
        free = [n for n, deps in graph.items() if n not in done and all(d in done for d in deps)]
        if not free:
            break
        done.update(free)
    return len(done) != len(graph)


def as_plan(plan: PlanSteps) -> dict[str, Any]:
    steps = []
    for name, description, deps in plan:
        step: dict[str, Any] = {"step_name": name, "description": description}
        if deps is not None:
            step["depends_on"] = deps
        steps.append(step)
    return {"steps": steps}


# --- strategies ---------------------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn, valid: bool = False, known: tuple[str, ...] = ()) -> PlanSteps:
    """Plans over a few names; ``known`` names existing steps a graph step may depend on."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    if not valid and draw(st.integers(0, 9)) == 0:
        names = names + [names[0]] if draw(st.booleans()) else []
    sequential = draw(st.booleans())
    wild = not valid and draw(st.integers(0, 3)) == 0
    plan: PlanSteps = []
    for i, name in enumerate(names):
        description = draw(st.sampled_from(DESCRIPTIONS))
        if sequential:
            plan.append((name, description, None))
        else:
            pool = NAMES if wild else names[:i] + [k for k in known if k not in names[i:]]
            deps = draw(st.lists(st.sampled_from(pool), max_size=3)) if pool else []
            plan.append((name, description, deps))
    return plan


#: Picks a step: mostly one that can act (current or ready), sometimes any, rarely an unknown id.
step_picks = st.integers(0, 20)
results = st.one_of(st.none(), st.integers(0, 9), st.just({"rows": [1, 2]}))


# --- the machine ----------------------------------------------------------------------------------


class Clock:
    """A clock far from real time that moves one millisecond per reading, so a trigger is
    always due after its task was created (the model orders claims by that)."""

    def __init__(self) -> None:
        self.now = CLOCK_NOW

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp: str | None = None
        self.env = self.make_env()
        self.clock = Clock()
        self.app = BatonApp(self.env, clock=self.clock)

    def make_env(self) -> dict[str, str]:
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}

    def teardown(self) -> None:
        self.app.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(plan=plans(valid=True))
    def create(self, plan: PlanSteps) -> None:
        self.generation = getattr(self, "generation", 0) + 1
        session = f"s{self.generation}"
        view = self.app.handle(
            c.CreateTask(task_name="machine", session_id=session, plan=as_plan(plan))
        )
        self.task_id = view["task_id"]
        self.ref = Ref(plan)
        self.after_end = 0
        self.claims_used = False
        follower = self.app.handle(
            c.CreateTask(task_name="follower", session_id=session, plan=as_plan([("p", "x", None)]))
        )
        self.follower_id = follower["task_id"]
        assert follower["status"] == "queued"

    @precondition(lambda self: not self.ref.running)
    @rule(plan=plans(valid=True))
    def create_another_task(self, plan: PlanSteps) -> None:
        """The task ended: carry on with a fresh one (in a fresh session)."""
        self.create(plan)

    # -- helpers -------------------------------------------------------------------------------
    def pick(self, which: int) -> str:
        if which >= 19:
            return (
                "unknown"
                if which == 20
                else next((n for n in NAMES if n not in self.ref.steps), "unknown")
            )
        actionable = [
            n for n, s in self.ref.steps.items() if s.status == "current" or self.ref.ready(s)
        ]
        candidates = actionable if which % 2 == 0 and actionable else list(self.ref.steps)
        return candidates[which // 2 % len(candidates)]

    def view(self) -> dict[str, Any]:
        return self.app.task_view(self.task_id)

    def step_id(self, name: str) -> str:
        for s in self.view()["steps"]:
            if s["step_name"] == name:
                return str(s["step_id"])
        return f"{self.task_id}.{99 if name == 'unknown' else 98}"

    def expect(self, code: int | None, command: c.Command) -> Any:
        """Runs ``command``; when the model says it is rejected, checks it changed nothing."""
        if not self.ref.running:
            self.after_end += 1
        before = (self.view()["version"], self.app.recorder.max_notification_id())
        if code is None:
            return self.app.handle(command)
        with pytest.raises(BatonError) as caught:
            self.app.handle(command)
        assert caught.value.code == code, caught.value
        assert (self.view()["version"], self.app.recorder.max_notification_id()) == before
        return None

    def step_error(self, name: str, verb: str) -> int | None:
        s = self.ref.steps.get(name)
        if s is None:
            return 404
        if not self.ref.running:
            return 409
        allowed = {
            "complete": {"pending", "current"},
            "fail": {"pending", "current"},
            "skip": {"pending", "current", "failed"},
            "retry": {"failed"},
        }[verb]
        if s.status not in allowed:
            return 409
        if verb == "complete" and s.status == "pending" and not self.ref.ready(s):
            return 409
        return None

    # -- rules ---------------------------------------------------------------------------------
    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(delay=st.sampled_from([0.0, 5.0]))
    def start(self, delay: float) -> None:
        ref = self.ref
        reply = self.expect(
            None if ref.running else 409, c.StartTask(task_id=self.task_id, delay_s=delay)
        )
        if reply is None:
            return
        current = ref.current()
        s = current[0] if current else ref.start_first_ready()
        if s is None:
            assert reply["status"] == "no_next_step"
            return
        ref.trigger = s.name
        assert reply["status"] == "queued" and reply["step"]["step_name"] == s.name
        assert reply["trigger"]["fire_at"] == self.clock.now + delay

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule()
    def next(self) -> None:
        reply = self.expect(None if self.ref.running else 409, c.NextStep(task_id=self.task_id))
        if reply is not None:
            status, name = self.ref.advance()
            assert reply["status"] == status
            assert (reply["step"] or {}).get("step_name") == name

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(data=st.data())
    def next_with_a_plan(self, data: st.DataObject) -> None:
        plan = data.draw(plans(known=tuple(self.ref.steps)), label="plan")
        ref = self.ref
        code = 409 if not ref.running else ref.replan_error(plan)
        reply = self.expect(code, c.NextStep(task_id=self.task_id, plan=as_plan(plan)))
        if reply is None:
            return
        ref.replan(plan)
        status, name = ("completed", None) if ref.finish_if_done() else ref.advance()
        assert reply["status"] == status
        assert (reply["step"] or {}).get("step_name") == name

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(data=st.data(), advance=st.booleans())
    def replan(self, data: st.DataObject, advance: bool) -> None:
        plan = data.draw(plans(known=tuple(self.ref.steps)), label="plan")
        ref = self.ref
        code = 409 if not ref.running else ref.replan_error(plan)
        command = c.ReplanTask(task_id=self.task_id, plan=as_plan(plan), advance_next=advance)
        reply = self.expect(code, command)
        if reply is None:
            return
        diff = ref.replan(plan)
        if not ref.finish_if_done() and advance:
            ref.advance()
        assert reply["diff"] == diff
        assert reply["status"] == ref.status

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(which=step_picks, result=results)
    def complete_step(self, which: int, result: Any) -> None:
        name = self.pick(which)
        code = self.step_error(name, "complete")
        command = c.CompleteStep(task_id=self.task_id, step_id=self.step_id(name), result=result)
        if self.expect(code, command) is not None:
            self.ref.complete(self.ref.steps[name], result)
            self.ref.finish_if_done()

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(which=step_picks, verb=st.sampled_from(["fail", "skip", "retry"]))
    def change_step(self, which: int, verb: str) -> None:
        name = self.pick(which)
        if verb == "retry" and which % 2 == 0:
            name = next((n for n, s in self.ref.steps.items() if s.status == "failed"), name)
        kind = {"fail": c.FailStep, "skip": c.SkipStep, "retry": c.RetryStep}[verb]
        code = self.step_error(name, verb)
        reply = self.expect(code, kind(task_id=self.task_id, step_id=self.step_id(name)))
        if reply is None:
            return
        s = self.ref.steps[name]
        if verb == "retry":
            s.status, s.claimed_by = "pending", None
        else:
            self.ref.leave(s, {"fail": "failed", "skip": "skipped"}[verb])
        self.ref.finish_if_done()
        assert reply["task_status"] == self.ref.status

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(worker=st.sampled_from(["w1", "w2"]))
    def claim(self, worker: str) -> None:
        self.claims_used = True
        reply = self.app.handle(c.ClaimStep(task_id=self.task_id, worker=worker))
        candidates = self.ref.claimable()
        if not candidates:
            assert reply == {"step": None, "queue_status": self.ref.idle_status()}
            return
        s = candidates[0]
        if s.status == "pending":
            self.ref.start(s)
        s.claimed_by = worker
        assert reply["queue_status"] == "in_progress"
        assert reply["step"]["step_name"] == s.name

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(key=st.sampled_from(["k1", "k2"]), value=st.integers(0, 3))
    def add_context(self, key: str, value: int) -> None:
        ended = self.ref.status in ("completed", "error", "cancelled")
        command = c.AddContext(task_id=self.task_id, key=key, value=value)
        if self.expect(409 if ended else None, command) is not None:
            self.ref.context[key] = value
            for s in self.ref.steps.values():
                s.context[key] = value

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(verb=st.sampled_from(["complete", "fail", "cancel"]))
    def end_task(self, verb: str) -> None:
        kind = {"complete": c.CompleteTask, "fail": c.FailTask, "cancel": c.CancelTask}[verb]
        if self.expect(None if self.ref.running else 409, kind(task_id=self.task_id)) is not None:
            self.ref.end(verb)

    @precondition(lambda self: self.ref.running or self.after_end < 1)
    @rule(plan=plans())
    def create_with_any_plan(self, plan: PlanSteps) -> None:
        """A create with an invalid plan is rejected and appends nothing."""
        before = self.app.recorder.max_notification_id()
        command = c.CreateTask(task_name="other", session_id="t", plan=as_plan(plan))
        if _plan_error(plan, set()):
            with pytest.raises(BatonError) as caught:
                self.app.handle(command)
            assert caught.value.code == 400
            assert self.app.recorder.max_notification_id() == before

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def the_views_agree_with_the_model(self) -> None:
        view, ref = self.view(), self.ref
        assert view["status"] == ref.status
        assert [s["step_name"] for s in view["steps"]] == list(ref.steps)
        for s in view["steps"]:
            r = ref.steps[s["step_name"]]
            assert (s["status"], s["attempts"], s.get("claimed_by")) == (
                r.status,
                r.attempts,
                r.claimed_by,
            ), s["step_name"]
            assert s["depends_on"] == r.deps
            assert s["description"] == r.description
            assert s["ready"] == ref.ready(r)
            assert s["context"] == r.context
        assert (view.get("trigger") or {}).get("step_id") == (
            self.step_id(ref.trigger) if ref.trigger else None
        )

    @invariant()
    def at_most_one_step_is_current_without_claims(self) -> None:
        current = [s for s in self.view()["steps"] if s["status"] == "current"]
        if not self.claims_used:
            assert len(current) <= 1

    @invariant()
    def no_step_is_current_while_a_dependency_is_unfinished(self) -> None:
        status = {s["step_name"]: s["status"] for s in self.view()["steps"]}
        for s in self.view()["steps"]:
            if s["status"] == "current":
                assert all(status[d] in SATISFIED for d in s["depends_on"] if d in status)

    @invariant()
    def a_task_completes_by_itself_exactly_when_every_step_is_finished(self) -> None:
        view = self.view()
        finished = all(s["status"] in FINISHED for s in view["steps"])
        if view["status"] == "running":
            assert not finished
        if self.ref.ended_by_itself:
            assert view["status"] == "completed" and finished
            assert not any(s["status"] == "failed" for s in view["steps"])

    @invariant()
    def replaying_the_stored_events_gives_the_live_view(self) -> None:
        live = self.view()
        assert self.app.task_view(self.task_id, version=live["version"]) == live
        uncached = self.app.repository.get(
            self.app.get_task(self.task_id).id, version=live["version"]
        )
        assert uncached.steps == self.app.get_task(self.task_id).steps

    @invariant()
    def the_sessions_next_task_starts_when_this_one_ends(self) -> None:
        follower = self.app.task_view(self.follower_id)
        if self.ref.running:
            assert follower["status"] == "queued"
            assert follower["steps"][0]["status"] == "pending"
        else:
            assert follower["status"] == "running"
            assert follower["steps"][0]["status"] == "current"
            assert "trigger" not in follower


class LifecycleMachineOnSqlite(LifecycleMachine):
    """The same machine on a SQLite file; at the end a fresh app reads the same views back."""

    def make_env(self) -> dict[str, str]:
        self.tmp = tempfile.mkdtemp(prefix="baton-machine-")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(Path(self.tmp) / "events.sqlite"),
        }

    def teardown(self) -> None:
        try:
            if hasattr(self, "task_id"):
                fresh = BatonApp(self.env)
                try:
                    assert fresh.task_view(self.task_id) == self.view()
                    assert fresh.task_view(self.follower_id) == self.app.task_view(self.follower_id)
                    assert fresh.history(self.task_id) == self.app.history(self.task_id)
                finally:
                    fresh.close()
        finally:
            super().teardown()


TestLifecycleMachine = LifecycleMachine.TestCase
TestLifecycleMachineOnSqlite = LifecycleMachineOnSqlite.TestCase
TestLifecycleMachineOnSqlite.settings = settings(
    settings.default, max_examples=15, stateful_step_count=25
)
