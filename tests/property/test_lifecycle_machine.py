"""Random command sequences against a simple reference model of the contract.

The model is plain data (per step: status, attempts, claim and lease, retry policy and retry
time, result; per task: its context, kind of plan and the step its pending trigger is for)
updated as the contract words it, on a clock the machine controls. After every command the
application's views must agree with it, and these laws hold:

- A sequential plan never has more than one current step (unless a replan turned a graph with
  several current steps into a sequential plan); a graph without claims never has more than
  one either: only create, start, next, a replan that removed the current step and a session
  handing over start a step, each only when no step is current.
- No step is current while one of its dependencies is unfinished (not completed or skipped; in
  a sequential plan, cancelled also counts as done).
- A rejected command changes no version and appends no notification, also when it failed
  halfway (a replan with ``advance_next`` that completed the current step first).
- A stale claim (lapsed, or the step re-claimed since) cannot complete, fail, skip or renew.
- A running task always has a step that is not completed, skipped or cancelled; a task that
  completed by itself has every step completed, skipped or cancelled, none failed.
- Rebuilding a task from its stored events (bypassing the cache, or a fresh app on the same
  SQLite file) gives the same view as the live aggregate.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from baton.domain import commands as c
from baton.domain.errors import BatonError
from baton.domain.services import BatonApp

NAMES = ["a", "b", "c", "d", "e", "f"]
DESCRIPTIONS = ["x", "y"]
GRAPH_SATISFIED = {"completed", "skipped"}
SEQUENTIAL_SATISFIED = {"completed", "skipped", "cancelled"}
FINISHED = {"completed", "skipped", "cancelled"}
HISTORY = FINISHED | {"failed"}
DEFAULT_LEASE_S = 300.0

#: (name, description, depends_on or None, max_attempts, retry_delay_s)
PlanStep = tuple[str, str, list[str] | None, int, float]
PlanSteps = list[PlanStep]


# --- the reference model ----------------------------------------------------------------------


@dataclass
class RefStep:
    name: str
    description: str
    deps: list[str]
    max_attempts: int = 1
    retry_delay_s: float = 1.0
    status: str = "pending"
    attempts: int = 0
    claimed_by: str | None = None
    claim_id: str | None = None
    lease_expires_at: float | None = None
    retry_at: float | None = None
    result: Any = None
    failure_message: str | None = None

    def unclaim(self) -> None:
        self.claimed_by = self.claim_id = self.lease_expires_at = None


def backoff(s: RefStep) -> float:
    """The contract's retry delay: ``retry_delay_s`` doubled per later attempt, capped at 1 h."""
    return float(min(3600.0, s.retry_delay_s * (2 ** max(0, s.attempts - 1))))


class Ref:
    """What the contract says one task looks like."""

    def __init__(self, plan: PlanSteps) -> None:
        self.status = "running"
        self.sequential = is_sequential(plan)
        self.steps: dict[str, RefStep] = {}
        self.context: dict[str, Any] = {}
        self.trigger: str | None = None
        self.ended_by_itself = False
        #: A replan made a graph with several current steps sequential, or broke a sequential
        #: plan's chain at a history step: its current steps may outnumber one.
        self.switched = False
        for name, description, deps, attempts, delay in _resolve(plan):
            self.steps[name] = RefStep(name, description, deps, attempts, delay)

    @property
    def running(self) -> bool:
        return self.status == "running"

    def satisfied(self, name: str, path: frozenset[str] = frozenset()) -> bool:
        """In a sequential plan, done and with every dependency satisfied (history steps keep
        their dependencies). A replan that would make a step still to run wait on a cycle is
        refused (``replan_error``), so the model never meets one."""
        s = self.steps[name]
        if not self.sequential:
            return s.status in GRAPH_SATISFIED
        assert name not in path, f"a step still to run waits on a cycle through {name!r}"
        path = path | {name}
        return s.status in SEQUENTIAL_SATISFIED and all(self.satisfied(d, path) for d in s.deps)

    def deps_satisfied(self, s: RefStep) -> bool:
        return all(self.satisfied(d) for d in s.deps if d in self.steps)

    def ready(self, s: RefStep, now: float) -> bool:
        return (
            self.running
            and s.status == "pending"
            and self.deps_satisfied(s)
            and (s.retry_at is None or s.retry_at <= now)
        )

    def current(self) -> list[RefStep]:
        return [s for s in self.steps.values() if s.status == "current"]

    def first_ready(self, now: float) -> RefStep | None:
        return next((s for s in self.steps.values() if self.ready(s, now)), None)

    def start(self, s: RefStep) -> None:
        s.status, s.attempts, s.retry_at = "current", s.attempts + 1, None
        s.unclaim()

    def start_first_ready(self, now: float) -> RefStep | None:
        s = self.first_ready(now)
        if s is not None:
            self.start(s)
        return s

    def leave(self, s: RefStep, status: str) -> None:
        """A transition out of current/pending: takes the step's trigger and lease with it
        (``claimed_by`` stays, as a record of who held it)."""
        if self.trigger == s.name:
            self.trigger = None
        s.status, s.claim_id, s.lease_expires_at = status, None, None

    def complete(self, s: RefStep, result: Any) -> None:
        self.leave(s, "completed")
        s.result = result

    def fail(self, s: RefStep, message: str | None, now: float) -> None:
        """A failed attempt: ready again after its delay while the policy allows more."""
        if max(s.attempts, 1) < s.max_attempts:
            self.leave(s, "pending")
            s.claimed_by, s.retry_at = None, now + backoff(s)
        else:
            self.leave(s, "failed")
        s.failure_message = message

    def expire(self, s: RefStep, now: float) -> None:
        """A lapsed lease: failed on the last attempt, still current in a sequential plan
        without a retry policy, ready again (after the retry delay, under a policy) otherwise."""
        if s.max_attempts > 1 and s.attempts >= s.max_attempts:
            self.leave(s, "failed")
            s.failure_message = "the claim's lease lapsed"
        elif self.sequential and s.max_attempts == 1:
            pass
        else:
            self.leave(s, "pending")
            s.retry_at = now + backoff(s) if s.max_attempts > 1 else None
        s.unclaim()

    def dependency_results(self, s: RefStep) -> dict[str, Any]:
        out = {}
        for d in s.deps:
            dep = self.steps.get(d)
            if dep is not None and dep.status == "completed" and dep.result is not None:
                out[d] = dep.result
        return out

    def sees(self, s: RefStep) -> dict[str, Any]:
        """The context of a reply returning one step: the task's, its dependencies' over it."""
        return {**self.context, **self.dependency_results(s)}

    def end(self, verb: str) -> None:
        self.trigger = None
        for s in self.current():
            s.status = {"complete": "completed", "fail": "failed", "cancel": "cancelled"}[verb]
            s.claim_id = s.lease_expires_at = None
        if verb == "cancel":
            for s in self.steps.values():
                if s.status == "pending":
                    s.status = "cancelled"
                    s.claim_id = s.lease_expires_at = None
        self.status = {"complete": "completed", "fail": "error", "cancel": "cancelled"}[verb]

    def finish_if_done(self) -> bool:
        if self.running and all(s.status in FINISHED for s in self.steps.values()):
            self.end("complete")
            self.ended_by_itself = True
            return True
        return False

    def advance(self, now: float, plan: PlanSteps | None = None) -> tuple[str, str | None]:
        """task.next: completes the first current step, applies ``plan``, starts the next."""
        current = self.current()
        if current:
            self.complete(current[0], None)
        if plan is not None:
            self.replan(plan)
        if self.finish_if_done():
            return "completed", None
        s = self.start_first_ready(now)
        if s is None:
            return "no_next_step", None
        self.trigger = s.name
        return "queued", s.name

    def claimable(self, now: float) -> RefStep | None:
        """The step a claim in this task gets: the first in plan order that is current and
        unclaimed, or ready (the trigger's step never ranks earlier: it fires after the task
        was created)."""
        if not self.running:
            return None
        return next(
            (
                s
                for s in self.steps.values()
                if (s.status == "current" and s.claimed_by is None) or self.ready(s, now)
            ),
            None,
        )

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
        history = {n: s.status for n, s in self.steps.items() if s.status in HISTORY}
        if _plan_error(plan, set(history)):
            return 400
        sequential = is_sequential(plan)
        specs = [spec for spec in _resolve(plan, history) if spec[0] not in history]
        if not sequential and any(
            history.get(d) == "cancelled" for _, _, deps, _, _ in specs for d in deps
        ):
            return 400
        remaining = {n: s for n, s in self.steps.items() if s.status not in HISTORY}
        wanted = {spec[0] for spec in specs}
        after = {n: s.status for n, s in self.steps.items() if n not in remaining or n in wanted}
        after.update({spec[0]: "pending" for spec in specs if spec[0] not in remaining})
        allowed = SEQUENTIAL_SATISFIED if sequential else GRAPH_SATISFIED
        for name, _, deps, _, _ in specs:
            current = name in remaining and remaining[name].status == "current"
            if current and any(after.get(d) not in allowed for d in deps):
                return 400
        after = copy.deepcopy(self)
        after.replan(plan)
        if waits_for_ever(
            {n: s.status for n, s in after.steps.items()},
            {n: s.deps for n, s in after.steps.items()},
            sequential=sequential,
        ):
            return 400
        return None

    def replan(self, plan: PlanSteps) -> dict[str, list[str]]:
        history = {n for n, s in self.steps.items() if s.status in HISTORY}
        specs = [spec for spec in _resolve(plan, history) if spec[0] not in history]
        remaining = {n: s for n, s in self.steps.items() if s.status not in HISTORY}
        wanted = {spec[0] for spec in specs}
        diff: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for name, description, deps, attempts, delay in specs:
            s = remaining.get(name)
            if s is not None and (s.description, s.deps, s.max_attempts, s.retry_delay_s) != (
                description,
                deps,
                attempts,
                delay,
            ):
                s.description, s.deps, s.max_attempts, s.retry_delay_s = (
                    description,
                    deps,
                    attempts,
                    delay,
                )
                diff["changed"].append(name)
        for name, description, deps, attempts, delay in specs:
            if name not in remaining:
                self.steps[name] = RefStep(name, description, deps, attempts, delay)
                diff["added"].append(name)
        sequential = is_sequential(plan)
        if sequential and not self.sequential and len(self.current()) > 1:
            self.switched = True
        self.sequential = sequential
        for name, s in remaining.items():
            if name not in wanted:
                self.leave(s, "cancelled")
                diff["removed"].append(name)
        listed = {spec[0] for spec in plan}
        # A failed step left out is dropped once nothing unfinished depends on it, dropped
        # ones included (a chain of them goes, whatever their order in the task).
        dropping = True
        while dropping:
            dropping = False
            for name in [n for n in self.steps if n in history]:
                s = self.steps[name]
                dependents = [o for o in self.steps.values() if name in o.deps]
                if (
                    s.status == "failed"
                    and name not in listed
                    and all(o.status in FINISHED for o in dependents)
                ):
                    self.leave(s, "skipped")
                    dropping = True
        return diff


def waits_for_ever(
    status: dict[str, str], deps: dict[str, list[str]], *, sequential: bool
) -> list[str]:
    """The steps still to run (pending, current, or failed: a retry makes one pending) that
    could never become ready, even if every other step still to run were done: the least set
    of dependencies that will be satisfied, grown until it stops growing. In a graph a
    completed or skipped step is satisfied, a cancelled one never, and one still to run once
    its own dependencies are; in a sequential plan a step is satisfied once it is done and its
    dependencies are (whatever its status, as every step is done or still to run)."""
    to_run = {n for n, st in status.items() if st in ("pending", "current", "failed")}
    will: set[str] = set()

    def deps_will(n: str) -> bool:
        return all(d in will for d in deps[n] if d in status)

    def becomes_satisfied(n: str) -> bool:
        if sequential:
            return deps_will(n)
        return status[n] in GRAPH_SATISFIED or (n in to_run and deps_will(n))

    grew = True
    while grew:
        grown = {n for n in status if n not in will and becomes_satisfied(n)}
        will |= grown
        grew = bool(grown)
    return sorted(n for n in to_run if not deps_will(n))


def is_sequential(plan: PlanSteps) -> bool:
    return all(deps is None for _, _, deps, _, _ in plan)


def _resolve(
    plan: PlanSteps, history: set[str] | frozenset[str] = frozenset()
) -> list[tuple[str, str, list[str], int, float]]:
    sequential = is_sequential(plan)
    names = [spec[0] for spec in plan]
    out = []
    for i, (name, description, deps, attempts, delay) in enumerate(plan):
        if sequential:
            # Each step waits for the step before it, and for the history steps in between.
            resolved = []
            j = i - 1
            while j >= 0 and names[j] in history:
                resolved.insert(0, names[j])
                j -= 1
            if j >= 0:
                resolved.insert(0, names[j])
        else:
            resolved = list(dict.fromkeys(deps or []))
        out.append((name, description, resolved, attempts, delay))
    return out


def _plan_error(plan: PlanSteps, history: set[str]) -> bool:
    names = [spec[0] for spec in plan]
    if not names or len(set(names)) != len(names):
        return True
    specs = _resolve(plan)
    for name, _, deps, _, _ in specs:
        if name in deps or any(d not in names and d not in history for d in deps):
            return True
    # A cycle among the steps that are not history: peel off steps with no unpeeled dependency.
    graph = {n: [d for d in deps if d in names and d not in history] for n, _, deps, _, _ in specs}
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
    for name, description, deps, attempts, delay in plan:
        step: dict[str, Any] = {"step_name": name, "description": description}
        if deps is not None:
            step["depends_on"] = deps
        if attempts != 1:
            step["max_attempts"] = attempts
        if delay != 1.0:
            step["retry_delay_s"] = delay
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
        attempts = draw(st.sampled_from([1, 1, 1, 2, 3]))
        delay = draw(st.sampled_from([1.0, 1.0, 0.0, 4.0]))
        if sequential:
            plan.append((name, description, None, attempts, delay))
        else:
            pool = NAMES if wild else names[:i] + [k for k in known if k not in names[i:]]
            deps = draw(st.lists(st.sampled_from(pool), max_size=3)) if pool else []
            plan.append((name, description, deps, attempts, delay))
    return plan


#: Picks a step: mostly one that can act (current or ready), sometimes any, rarely an unknown id.
step_picks = st.integers(0, 20)
results = st.one_of(st.none(), st.integers(0, 9), st.just({"rows": [1, 2]}))
#: The claim a step command carries: none (an operator), the holder's, or a stale one.
fences = st.sampled_from(["none", "none", "holder", "stale"])
leases = st.sampled_from([None, 1.0, 5.0])


# --- the machine ----------------------------------------------------------------------------------


class Clock:
    """The application's clock, moved only by the machine: a millisecond before each command
    (so a trigger always fires after its task was created) and by ``tick``. It stays behind
    real time, as the projections' queue compares ``ready_at`` with real time."""

    def __init__(self) -> None:
        self.now = time.time() - 30 * 86400

    def __call__(self) -> float:
        return self.now


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp: str | None = None
        self.env = self.make_env()
        self.clock = Clock()
        self.app = BatonApp(self.env, clock=self.clock, default_lease_s=DEFAULT_LEASE_S)
        #: Every claim id handed out, for stale-claim commands.
        self.claim_ids: list[str] = []

    def make_env(self) -> dict[str, str]:
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}

    def teardown(self) -> None:
        self.app.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize(plan=plans(valid=True), spare=st.lists(plans(valid=True), max_size=4))
    def first_task(self, plan: PlanSteps, spare: list[PlanSteps]) -> None:
        self.spare_plans = spare
        self.create(plan)

    def create(self, plan: PlanSteps) -> None:
        self.generation = getattr(self, "generation", 0) + 1
        session = f"s{self.generation}"
        self.clock.now += 0.001
        view = self.app.handle(
            c.CreateTask(task_name="machine", session_id=session, plan=as_plan(plan))
        )
        self.task_id = view["task_id"]
        self.ref = Ref(plan)
        self.ref.start_first_ready(self.clock.now)
        self.after_end = 0
        self.claims_used = False
        follower = self.app.handle(
            c.CreateTask(
                task_name="follower", session_id=session, plan=as_plan([("p", "x", None, 1, 1.0)])
            )
        )
        self.follower_id = follower["task_id"]
        assert follower["status"] == "queued"

    @rule(plan=plans(valid=True))
    def create_another_task(self, plan: PlanSteps) -> None:
        """When the task ended, carry on with a fresh one (in a fresh session); while it runs,
        a task created in another session leaves it alone."""
        if not self.ref.running:
            self.create(plan)
            return
        before = self.view()["version"]
        self.clock.now += 0.001
        other = self.app.handle(
            c.CreateTask(task_name="bystander", session_id="other", plan=as_plan(plan))
        )
        assert other["task_id"] != self.task_id
        assert self.view()["version"] == before

    # -- helpers -------------------------------------------------------------------------------
    def roll(self) -> None:
        """One command after the task ended, the next rule starts on a fresh task (in a fresh
        session) with one of the plans drawn up front, while there are any left."""
        if not self.ref.running and self.after_end >= 1 and self.spare_plans:
            self.create(self.spare_plans.pop(0))

    @property
    def now(self) -> float:
        return self.clock.now

    def pick(self, which: int) -> str:
        if which >= 19:
            return (
                "unknown"
                if which == 20
                else next((n for n in NAMES if n not in self.ref.steps), "unknown")
            )
        actionable = [
            n
            for n, s in self.ref.steps.items()
            if s.status == "current" or self.ref.ready(s, self.now)
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

    def fence(self, name: str, how: str) -> str | None:
        s = self.ref.steps.get(name)
        if how == "none":
            return None
        if how == "holder" and s is not None and s.claim_id is not None:
            return s.claim_id
        stale = [i for i in self.claim_ids if s is None or i != s.claim_id]
        return stale[-1] if stale else "never-issued"

    def expect(self, code: int | None, command: c.Command) -> Any:
        """Runs ``command`` (a millisecond later than the last one); when the model says it is
        rejected, checks it changed nothing."""
        if not self.ref.running:
            self.after_end += 1
        self.clock.now += 0.001
        before = (self.view()["version"], self.app.recorder.max_notification_id())
        if code is None:
            return self.app.handle(command)
        with pytest.raises(BatonError) as caught:
            self.app.handle(command)
        assert caught.value.code == code, caught.value
        assert (self.view()["version"], self.app.recorder.max_notification_id()) == before
        event(f"rejected {type(command).__name__} {code}")
        return None

    def step_error(self, name: str, verb: str, claim_id: str | None = None) -> int | None:
        s = self.ref.steps.get(name)
        if s is None:
            return 404
        if claim_id is not None and (s.claim_id != claim_id or s.status != "current"):
            return 409
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
        if verb == "complete" and s.status == "pending" and not self.ref.deps_satisfied(s):
            return 409
        return None

    def check_step_reply(self, reply: dict[str, Any], s: RefStep) -> None:
        """A reply that returns one step: its state, and everything it sees as context."""
        assert reply["step_name"] == s.name
        assert (reply["status"], reply["attempts"], reply.get("claimed_by")) == (
            s.status,
            s.attempts,
            s.claimed_by,
        )
        assert reply.get("claim_id") == s.claim_id
        assert reply.get("lease_expires_at") == s.lease_expires_at
        assert reply["context"] == self.ref.sees(s)

    def claimed(self, reply: dict[str, Any], worker: str, lease_s: float | None) -> None:
        """Checks a claim's reply against the model, and records the claim in it."""
        s = self.ref.claimable(self.now)
        event("claim found nothing" if s is None else "claim got a step")
        if s is None:
            assert reply == {"step": None, "queue_status": self.ref.idle_status()}
            return
        if s.status == "pending":
            event("claim of a retried step" if s.attempts else "claim of a ready step")
            self.ref.start(s)
        step = reply["step"]
        assert reply["queue_status"] == "in_progress"
        assert step["step_name"] == s.name
        assert step["claim_id"] not in self.claim_ids, "a claim id was handed out twice"
        s.claimed_by, s.claim_id = worker, step["claim_id"]
        s.lease_expires_at = self.now + (lease_s or DEFAULT_LEASE_S)
        self.claim_ids.append(step["claim_id"])
        self.check_step_reply(step, s)

    # -- rules ---------------------------------------------------------------------------------
    @rule(delay=st.sampled_from([0.0, 5.0]))
    def start(self, delay: float) -> None:
        self.roll()
        ref = self.ref
        reply = self.expect(
            None if ref.running else 409, c.StartTask(task_id=self.task_id, delay_s=delay)
        )
        if reply is None:
            return
        current = ref.current()
        s = current[0] if current else ref.start_first_ready(self.now)
        if s is None:
            assert reply["status"] == "no_next_step"
            return
        ref.trigger = s.name
        assert reply["status"] == "queued" and reply["step"]["step_name"] == s.name
        assert reply["trigger"]["fire_at"] == self.now + delay
        self.check_step_reply(reply["step"], s)

    @rule()
    def next(self) -> None:
        self.roll()
        reply = self.expect(None if self.ref.running else 409, c.NextStep(task_id=self.task_id))
        if reply is not None:
            status, name = self.ref.advance(self.now + 0.0)
            assert reply["status"] == status
            assert (reply["step"] or {}).get("step_name") == name

    def advancing_error(self, plan: PlanSteps) -> int | None:
        """A replan with advance_next is judged after the current step was completed."""
        if not self.ref.running:
            return 409
        trial = copy.deepcopy(self.ref)
        current = trial.current()
        if current:
            trial.complete(current[0], None)
        return trial.replan_error(plan)

    @rule(data=st.data())
    def next_with_a_plan(self, data: st.DataObject) -> None:
        self.roll()
        plan = data.draw(plans(known=tuple(self.ref.steps)), label="plan")
        code = self.advancing_error(plan)
        reply = self.expect(code, c.NextStep(task_id=self.task_id, plan=as_plan(plan)))
        if reply is None:
            return
        status, name = self.ref.advance(self.now, plan)
        assert reply["status"] == status
        assert (reply["step"] or {}).get("step_name") == name

    @rule(data=st.data(), advance=st.booleans())
    def replan(self, data: st.DataObject, advance: bool) -> None:
        self.roll()
        plan = data.draw(plans(known=tuple(self.ref.steps)), label="plan")
        ref = self.ref
        if advance:
            code = self.advancing_error(plan)
        else:
            code = 409 if not ref.running else ref.replan_error(plan)
        command = c.ReplanTask(task_id=self.task_id, plan=as_plan(plan), advance_next=advance)
        reply = self.expect(code, command)
        if reply is None:
            return
        if advance:
            trial = copy.deepcopy(ref)
            current = trial.current()
            if current:
                trial.complete(current[0], None)
            diff = trial.replan(plan)
            status, _ = ref.advance(self.now, plan)
            assert reply["advance"]["status"] == status
        else:
            had_current = bool(ref.current())
            diff = ref.replan(plan)
            if not ref.finish_if_done() and had_current and ref.running and not ref.current():
                ref.start_first_ready(self.now)
        assert reply["diff"] == diff
        assert reply["status"] == ref.status

    @rule(which=step_picks, result=results, how=fences, claim_next=st.booleans())
    def complete_step(self, which: int, result: Any, how: str, claim_next: bool) -> None:
        self.roll()
        name = self.pick(which)
        claim_id = self.fence(name, how)
        code = self.step_error(name, "complete", claim_id)
        command = c.CompleteStep(
            task_id=self.task_id,
            step_id=self.step_id(name),
            result=result,
            claim_id=claim_id,
            claim_next=claim_next,
        )
        reply = self.expect(code, command)
        if reply is None:
            return
        s = self.ref.steps[name]
        self.ref.complete(s, result)
        self.ref.finish_if_done()
        self.check_step_reply(reply, s)
        assert reply["result"] == result if result is not None else "result" not in reply
        assert reply["task_status"] == self.ref.status
        if claim_next:
            self.claims_used = True
            self.claimed(reply["next"], s.claimed_by or "anonymous", None)
        else:
            assert "next" not in reply

    @rule(which=step_picks, verb=st.sampled_from(["fail", "skip", "retry"]), how=fences)
    def change_step(self, which: int, verb: str, how: str) -> None:
        self.roll()
        name = self.pick(which)
        if verb == "retry" and which % 2 == 0:
            name = next((n for n, s in self.ref.steps.items() if s.status == "failed"), name)
        claim_id = None if verb == "retry" else self.fence(name, how)
        code = self.step_error(name, verb, claim_id)
        step_id = self.step_id(name)
        command: c.Command
        if verb == "fail":
            command = c.FailStep(task_id=self.task_id, step_id=step_id, claim_id=claim_id)
        elif verb == "skip":
            command = c.SkipStep(task_id=self.task_id, step_id=step_id, claim_id=claim_id)
        else:
            command = c.RetryStep(task_id=self.task_id, step_id=step_id)
        reply = self.expect(code, command)
        if reply is None:
            return
        s = self.ref.steps[name]
        if verb == "retry":
            s.status, s.retry_at = "pending", None
            s.unclaim()
        elif verb == "fail":
            self.ref.fail(s, None, self.now)
            event(f"fail: step {s.status}")
        else:
            self.ref.leave(s, "skipped")
        self.ref.finish_if_done()
        self.check_step_reply(reply, s)
        assert reply.get("retry_at") == (s.retry_at if s.status == "pending" else None)
        assert reply["task_status"] == self.ref.status

    @rule(worker=st.sampled_from(["w1", "w2"]), lease_s=leases)
    def claim(self, worker: str, lease_s: float | None) -> None:
        self.roll()
        self.claims_used = True
        self.clock.now += 0.001
        reply = self.app.handle(c.ClaimStep(task_id=self.task_id, worker=worker, lease_s=lease_s))
        self.claimed(reply, worker, lease_s)

    @rule(which=step_picks, how=st.sampled_from(["holder", "holder", "stale"]), lease_s=leases)
    def heartbeat(self, which: int, how: str, lease_s: float | None) -> None:
        self.roll()
        claimed = [n for n, s in self.ref.steps.items() if s.claim_id is not None]
        name = claimed[which % len(claimed)] if claimed and which < 19 else self.pick(which)
        claim_id = self.fence(name, how) or "never-issued"
        s = self.ref.steps.get(name)
        if s is None:
            code: int | None = 404
        elif not self.ref.running or s.claim_id != claim_id or s.status != "current":
            code = 409
        else:
            code = None
        command = c.HeartbeatStep(
            task_id=self.task_id, step_id=self.step_id(name), claim_id=claim_id, lease_s=lease_s
        )
        reply = self.expect(code, command)
        if reply is None or s is None:
            return
        s.lease_expires_at = self.now + (lease_s or DEFAULT_LEASE_S)
        self.check_step_reply(reply, s)
        event("heartbeat renewed a lease")

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 10.0, 400.0]), keeper=st.booleans())
    def tick(self, seconds: float, keeper: bool) -> None:
        """Time passes: leases lapse, retry delays end; the lease keeper may run or lag."""
        self.roll()
        self.clock.now += seconds
        if keeper:
            self.expire()

    @rule()
    def expire(self) -> None:
        """The lease keeper: every lapsed claim is ended, once; a second call finds nothing."""
        self.roll()
        lapsed = [
            s
            for s in self.ref.steps.values()
            if s.claim_id is not None
            and s.lease_expires_at is not None
            and s.lease_expires_at <= self.now
        ]
        for s in lapsed:
            assert s.claim_id is not None
            command = c.ExpireClaim(
                task_id=self.task_id, step_id=self.step_id(s.name), claim_id=s.claim_id
            )
            reply = self.expect(None, command)
            if not self.ref.running:
                assert reply["expired"] is False
                continue
            assert reply["expired"] is True
            self.ref.expire(s, self.now)
            event(f"lease lapsed: step {s.status}")
            self.ref.finish_if_done()
            self.check_step_reply(reply["step"], s)
            before = self.view()["version"]
            again = self.app.handle(command)
            assert again["expired"] is False and self.view()["version"] == before

    @precondition(lambda self: self.claim_ids)
    @rule(which=step_picks)
    def expire_a_claim_that_holds_or_has_not_lapsed(self, which: int) -> None:
        """ExpireClaim for a claim that is stale or still within its lease changes nothing."""
        self.roll()
        name = self.pick(which)
        s = self.ref.steps.get(name)
        claim_id = self.claim_ids[which % len(self.claim_ids)]
        if (
            s is not None
            and s.claim_id == claim_id
            and s.lease_expires_at is not None
            and s.lease_expires_at <= self.now + 0.001
        ):
            return  # it lapsed: that is ``expire``'s case
        command = c.ExpireClaim(task_id=self.task_id, step_id=self.step_id(name), claim_id=claim_id)
        before = (self.view()["version"], self.app.recorder.max_notification_id())
        reply = self.expect(404 if s is None else None, command)
        if reply is not None:
            assert reply["expired"] is False
            assert (self.view()["version"], self.app.recorder.max_notification_id()) == before

    @rule(key=st.sampled_from(["k1", "k2"]), value=st.integers(0, 3))
    def add_context(self, key: str, value: int) -> None:
        self.roll()
        ended = self.ref.status in ("completed", "error", "cancelled")
        command = c.AddContext(task_id=self.task_id, key=key, value=value)
        if self.expect(409 if ended else None, command) is not None:
            self.ref.context[key] = value

    @rule(verb=st.sampled_from(["complete", "fail", "cancel"]))
    def end_task(self, verb: str) -> None:
        self.roll()
        kind = {"complete": c.CompleteTask, "fail": c.FailTask, "cancel": c.CancelTask}[verb]
        if self.expect(None if self.ref.running else 409, kind(task_id=self.task_id)) is not None:
            self.ref.end(verb)

    @rule(plan=plans())
    def create_with_any_plan(self, plan: PlanSteps) -> None:
        """A create with an invalid plan is rejected and appends nothing."""
        self.roll()
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
        assert view["sequential"] == ref.sequential
        assert view["context"] == ref.context
        assert [s["step_name"] for s in view["steps"]] == list(ref.steps)
        for s in view["steps"]:
            r = ref.steps[s["step_name"]]
            assert (s["status"], s["attempts"], s.get("claimed_by")) == (
                r.status,
                r.attempts,
                r.claimed_by,
            ), s["step_name"]
            assert (s.get("claim_id"), s.get("lease_expires_at")) == (
                r.claim_id,
                r.lease_expires_at,
            ), s["step_name"]
            assert s.get("retry_at") == (r.retry_at if r.status == "pending" else None)
            assert (s["max_attempts"], s.get("failure_message")) == (
                r.max_attempts,
                r.failure_message,
            ), s["step_name"]
            assert s.get("result") == r.result
            assert s["depends_on"] == r.deps
            assert s["description"] == r.description
            assert s["ready"] == ref.ready(r, self.now), s["step_name"]
            assert s["blocked"] == (r.status == "pending" and not ref.deps_satisfied(r))
            assert s["context"] == ref.dependency_results(r)
        current = ref.current()
        assert (view.get("current_step") or {}).get("step_name") == (
            current[0].name if current else None
        )
        assert (view.get("trigger") or {}).get("step_id") == (
            self.step_id(ref.trigger) if ref.trigger else None
        )

    @invariant()
    def at_most_one_step_is_current(self) -> None:
        current = [s for s in self.view()["steps"] if s["status"] == "current"]
        if (self.ref.sequential and not self.ref.switched) or not self.claims_used:
            assert len(current) <= 1

    @invariant()
    def no_step_is_current_while_a_dependency_is_unfinished(self) -> None:
        view = self.view()
        status = {s["step_name"]: s["status"] for s in view["steps"]}
        done = SEQUENTIAL_SATISFIED if view["sequential"] else GRAPH_SATISFIED
        for s in view["steps"]:
            if s["status"] == "current":
                assert all(status[d] in done for d in s["depends_on"] if d in status)

    @invariant()
    def no_step_still_to_run_waits_for_ever(self) -> None:
        view = self.view()
        if view["status"] == "running":
            status = {s["step_name"]: s["status"] for s in view["steps"]}
            deps = {s["step_name"]: s["depends_on"] for s in view["steps"]}
            assert not waits_for_ever(status, deps, sequential=view["sequential"])

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
                fresh = BatonApp(self.env, clock=self.clock)
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
