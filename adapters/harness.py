"""The conformance harness: a property-based state machine driven over NATS against any running
Baton deployment, checking the contract's laws after every command.

(One module: hypothesis wants the rules, their reference model and the laws in one state-machine
class, and the harness ships in the wheel so a deployment can be checked from the CLI.)

    from baton.adapters.harness import run_harness
    report = run_harness("nats://127.0.0.1:4222", prefix="baton", examples=50)
    assert report.ok, report.failure

or ``python -m baton.adapters.harness --nats URL --prefix P --examples N`` (exit status 1 on a
break).

Hypothesis generates sequences of commands (creates with sequential and graph plans, some
steps with a retry policy, start, next, replan, step complete / fail / skip / retry, claim with a
lease, complete with ``claim_next``, heartbeats, step commands fenced by a claim id (the
holder's or a stale one), waits for a short lease to lapse, task complete / fail / cancel,
context, and invalid ones: unknown ids, malformed requests, bad plans) and sends them through
``BatonClient``. After each command it checks the reply against a simple reference model (task
statuses, sessions' queues, which step commands the lifecycle table allows, retry policies,
which claims hold) and the laws:

- a rejected command changes no task's version, and its error is the contract's;
- a stale claim id cannot complete, fail, skip or renew (409 ``stale_claim``);
- a lapsed lease is ended by the service itself, once (one ``ClaimExpired`` per claim), and
  its step is handed out again as the retry policy says;
- at most one current step in a sequential plan;
- no step is current while one of its dependencies is unfinished;
- a step's context in a task view is its completed dependencies' results;
- a running task never has every step finished (it completes by itself);
- history versions are contiguous, and the view at the last version is the current view.

A break is reported with the shrunk command sequence that shows it (Hypothesis prints it as a
program). Every run names its tasks and sessions with a fresh prefix, so it can run against a
shared deployment: it only touches what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from baton.adapters.client import BatonClient, BatonRequestError
from baton.adapters.contract import subject_of
from baton.domain import commands as c

T = TypeVar("T")

FINISHED = frozenset({"completed", "skipped", "cancelled"})
SATISFIED = frozenset({"completed", "skipped"})
SEQUENTIAL_SATISFIED = FINISHED
#: A lease short enough to lapse while the harness waits, and one that does not.
SHORT_LEASE_S = 0.5
LONG_LEASE_S = 60.0
#: How long the harness waits for the service to end a lapsed lease.
LAPSE_WAIT_S = 8.0
ENDED = frozenset({"completed", "error", "cancelled"})
NAMES = ("a", "b", "c", "d", "e")


class LoopThread:
    """An asyncio event loop in a daemon thread: synchronous code runs coroutines on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="harness", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class HarnessReport:
    """What a run did, and the first contract break it found (with its shrunk program)."""

    nats_url: str
    prefix: str
    run_id: str
    examples: int
    commands: int = 0
    rejected: int = 0
    checks: int = 0
    tasks: int = 0
    seconds: float = 0.0
    failure: str | None = None
    program: list[str] = field(default_factory=list)
    #: How often each subject was sent, and each lease event seen (lapses, fenced commands).
    #: (A plain dict: ``dataclasses.asdict`` rebuilds a Counter from its items, as counts of pairs.)
    tally: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.tally[what] = self.tally.get(what, 0) + 1

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        verdict = "no contract break" if self.ok else "CONTRACT BREAK"
        text = (
            f"baton harness {self.run_id} against {self.nats_url} (prefix {self.prefix}): "
            f"{verdict}; {self.examples} examples, {self.commands} commands "
            f"({self.rejected} rejected as expected), {self.tasks} tasks, {self.checks} checks "
            f"in {self.seconds:.1f} s"
        )
        if self.tally:
            text += "\n  " + ", ".join(f"{k} {n}" for k, n in sorted(self.tally.items()))
        if not self.ok:
            text += f"\n{self.failure}\nShrunk program:\n" + "\n".join(self.program)
        return text


# -- strategies --------------------------------------------------------------------------------


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    """A valid plan: sequential (no depends_on), or a DAG over earlier step names; some steps
    carry a retry policy (retries without delay, so the harness need not wait for them)."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    sequential = draw(st.booleans())
    steps = []
    for i, name in enumerate(names):
        step: dict[str, Any] = {"step_name": name, "description": f"do {name}"}
        if not sequential:
            step["depends_on"] = (
                draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
            )
        attempts = draw(st.sampled_from([1, 1, 2, 3]))
        if attempts > 1:
            step["max_attempts"] = attempts
            step["retry_delay_s"] = 0.0
        steps.append(step)
    return {"steps": steps}


bad_plans = st.sampled_from(
    [
        {"steps": []},
        {"steps": [{"step_name": "a"}, {"step_name": "a"}]},
        {"steps": [{"step_name": "a", "depends_on": ["nope"]}]},
        {
            "steps": [
                {"step_name": "a", "depends_on": ["b"]},
                {"step_name": "b", "depends_on": ["a"]},
            ]
        },
    ]
)

malformed = st.sampled_from(
    [
        ("task.create", b"{not json"),
        ("task.create", b"[]"),
        ("task.create", b'{"task_name": 5}'),
        ("task.create", b'{"task_name": "t", "unknown": 1}'),
        ("task.create", b'{"task_name": "t", "session_id": "../../etc/passwd"}'),
        ("task.next", b'{"task_id": null}'),
        ("step.complete", b'{"task_id": "x"}'),
        ("task.start", b'{"task_id": "x", "delay_s": -1}'),
        ("query.tasks", b'{"limit": 0}'),
        ("task.context", b'{"task_id": "x", "key": ""}'),
    ]
)


def is_sequential(plan: dict[str, Any]) -> bool:
    return all("depends_on" not in s for s in plan["steps"])


# -- the machine -------------------------------------------------------------------------------


@dataclass
class TaskModel:
    task_id: str
    session: str
    status: str
    sequential: bool
    claimed: bool = False
    view: dict[str, Any] = field(default_factory=dict)
    #: step_id -> (claim_id, lease_s) of the claims the harness got and believes still hold.
    claims: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: (step_id, claim_id) of claims that no longer hold their step.
    stale: list[tuple[str, str]] = field(default_factory=list)
    #: A replan turned a graph with several current steps into a sequential plan.
    switched: bool = False

    def drop_claim(self, step_id: str) -> None:
        held = self.claims.pop(step_id, None)
        if held is not None:
            self.stale.append((step_id, held[0]))


class ContractBreak(AssertionError):
    """Baton did something the contract does not allow."""


def make_machine(
    runner: LoopThread, client: BatonClient, report: HarnessReport
) -> type[RuleBasedStateMachine]:
    """The state machine class, bound to a live client."""

    def call(coro: Coroutine[Any, Any, T]) -> T:
        return runner.run(coro, timeout=client.timeout * 3)

    def subject(request: type[Any], fallback: str) -> str:
        try:
            return subject_of(request)
        except KeyError:  # a client older than the subject
            return fallback

    heartbeat_subject = subject(c.HeartbeatStep, "step.heartbeat")
    try:
        call(client.request(heartbeat_subject, {"task_id": "-", "step_id": "-", "claim_id": "-"}))
    except BatonRequestError as error:
        # 503: no responder (a deployment from before heartbeats); 404 or 400: served.
        heartbeats = error.code != 503
    else:  # pragma: no cover - a heartbeat of nothing cannot succeed
        heartbeats = True

    class BatonContract(RuleBasedStateMachine):
        examples = 0

        def __init__(self) -> None:
            super().__init__()
            BatonContract.examples += 1
            self.example = f"{report.run_id}-{BatonContract.examples}"
            self.tasks: list[TaskModel] = []
            self.queues: dict[str, list[str]] = {}  # session -> queued task ids, in order
            self.running: dict[str, str | None] = {}  # session -> its running task

        # -- sending ---------------------------------------------------------------------------
        def send(self, method: str, **args: Any) -> tuple[Any, BatonRequestError | None]:
            """The reply or the error; an error must change no task's version."""
            return self.submit(method, lambda: getattr(client, method)(**args))

        def send_to(
            self, name: str, payload: dict[str, Any]
        ) -> tuple[Any, BatonRequestError | None]:
            """As ``send``, for a subject by name (fields the typed client may not have yet)."""
            return self.submit(name, lambda: client.request(name, payload))

        def submit(self, what: str, make: Any) -> tuple[Any, BatonRequestError | None]:
            report.commands += 1
            report.count(what)
            before = self.known_versions()
            try:
                return call(make()), None
            except BatonRequestError as error:
                report.rejected += 1
                self.expect(error.code in (400, 404, 409, 413), f"{what} gave {error}")
                self.expect(bool(error.reason and error.message), f"{what}: error {error}")
                after = self.versions()
                changed = [t for t, v in after.items() if v != before.get(t)]
                self.expect(
                    all(self.only_lapses_since(t, before[t]) for t in changed),
                    f"rejected {what} changed a version",
                )
                return None, error

        def only_lapses_since(self, task_id: str, version: int) -> bool:
            """Whether every event after ``version`` is a lapse the service recorded itself."""
            events = call(client.history(task_id=task_id))["events"]
            return all(e["type"] == "ClaimExpired" for e in events if e["version"] > version)

        def known_versions(self) -> dict[str, int]:
            """The versions the last check saw (it runs after every command)."""
            return {t.task_id: int(t.view["version"]) for t in self.tasks if t.view}

        def versions(self) -> dict[str, int]:
            known = self.known_versions()
            return {
                t.task_id: int(self.fetch(t)["version"]) for t in self.tasks if t.task_id in known
            }

        def fetch(self, task: TaskModel) -> dict[str, Any]:
            view: dict[str, Any] = call(client.task(task_id=task.task_id))
            steps = {s["step_id"]: s for s in view["steps"]}
            for step_id, (claim_id, _) in list(task.claims.items()):
                if steps.get(step_id, {}).get("claim_id") != claim_id:
                    task.drop_claim(step_id)
                    self.lost(task, step_id, claim_id)
            return view

        def task_of(self, task_id: str) -> TaskModel | None:
            return next((t for t in self.tasks if t.task_id == task_id), None)

        def held(self, short: bool | None = None) -> list[tuple[TaskModel, str, str, float]]:
            """The claims the harness holds: (task, step_id, claim_id, lease_s)."""
            return [
                (t, step_id, claim_id, lease)
                for t in self.tasks
                for step_id, (claim_id, lease) in t.claims.items()
                if short is None or (lease <= SHORT_LEASE_S) == short
            ]

        def stale_claim(self, task: TaskModel, step_id: str) -> str:
            ids = [claim for step, claim in task.stale if step == step_id]
            return ids[-1] if ids else f"{self.example}-never-issued"

        def expect_stale(self, what: str, error: BatonRequestError | None) -> None:
            report.count("stale claim fenced off")
            self.expect(
                error is not None and error.code == 409 and error.reason == "stale_claim",
                f"{what} with a stale claim: {error}",
            )

        def record_claim(self, reply: dict[str, Any], lease_s: float) -> None:
            """Checks a claim's reply and remembers the claim it made."""
            if reply["step"] is None:
                self.expect(reply["queue_status"] in ("blocked", "done", "failed"), str(reply))
                return
            step = reply["step"]
            self.expect(reply["queue_status"] == "in_progress", str(reply))
            self.expect(step["status"] == "current", str(reply))
            claim_id = step.get("claim_id")
            self.expect(bool(claim_id) and step.get("lease_expires_at"), f"no lease: {step}")
            known = {claim for t in self.tasks for _, claim in t.stale} | {
                claim for t in self.tasks for claim, _ in t.claims.values()
            }
            self.expect(claim_id not in known, f"claim id {claim_id} handed out twice")
            owner = self.task_of(step["task_id"])
            if owner is not None:
                owner.claims[step["step_id"]] = (claim_id, lease_s)

        def expect(self, condition: bool, message: str) -> None:
            report.checks += 1
            if not condition:
                raise ContractBreak(message)

        def pick(self, index: int) -> TaskModel:
            return self.tasks[index % len(self.tasks)]

        def ended(self, task: TaskModel) -> None:
            """The model's session hand-off: the next queued task of the session starts."""
            if self.running.get(task.session) == task.task_id:
                queue = self.queues.get(task.session, [])
                self.running[task.session] = queue.pop(0) if queue else None
                for other in self.tasks:
                    if other.task_id == self.running[task.session]:
                        other.status = "running"
            elif task.task_id in self.queues.get(task.session, []):
                self.queues[task.session].remove(task.task_id)

        def set_status(self, task: TaskModel, status: str) -> None:
            was_live = task.status not in ENDED
            task.status = status
            if was_live and status in ENDED:
                self.ended(task)

        def step_of(self, task: TaskModel, index: int) -> dict[str, Any]:
            steps: list[dict[str, Any]] = task.view["steps"]
            return steps[index % len(steps)]

        # -- rules -----------------------------------------------------------------------------
        @initialize(plan=plans(), priority=st.integers(0, 9))
        def first_task(self, plan: dict[str, Any], priority: int) -> None:
            """Every sequence starts with a task, so the step and lease rules have work."""
            self.create(plan, 0, priority)

        @rule(plan=plans(), session=st.integers(0, 1), priority=st.integers(0, 9))
        def create(self, plan: dict[str, Any], session: int, priority: int) -> None:
            # A private session ("_..."): unscoped claims and the unscoped queue of real
            # workers never see its steps; only claims naming it or its tasks do.
            session_id = f"_{self.example}-s{session}"
            reply, error = self.send(
                "create_task",
                task_name=f"{self.example} task {len(self.tasks)}",
                session_id=session_id,
                priority=priority,
                plan=plan,
            )
            self.expect(error is None, f"a valid create was rejected: {error}")
            busy = self.running.get(session_id) is not None
            expected = "queued" if busy else "running"
            self.expect(reply["status"] == expected, f"created {reply['status']}, not {expected}")
            task = TaskModel(reply["task_id"], session_id, expected, is_sequential(plan))
            self.tasks.append(task)
            if busy:
                self.queues.setdefault(session_id, []).append(task.task_id)
            else:
                self.running[session_id] = task.task_id
            report.tasks += 1

        @rule(plan=bad_plans)
        def create_with_a_bad_plan(self, plan: dict[str, Any]) -> None:
            _, error = self.send("create_task", task_name=f"{self.example} bad", plan=plan)
            self.expect(error is not None and error.code == 400, f"bad plan accepted: {plan}")

        @rule(message=malformed)
        def malformed_request(self, message: tuple[str, bytes]) -> None:
            subject, body = message
            report.commands += 1
            before = self.known_versions()
            try:
                call(client.request_raw(subject, body))
            except BatonRequestError as error:
                report.rejected += 1
                self.expect(error.code == 400, f"{subject} {body!r} gave {error}")
                self.expect(self.versions() == before, "a malformed request changed a version")
            else:
                self.expect(False, f"{subject} {body!r} was accepted")

        @rule(verb=st.sampled_from(["task", "complete_step", "next_step", "cancel_task"]))
        def unknown_task(self, verb: str) -> None:
            task_id = f"{self.example}-missing"
            args: dict[str, Any] = {"task_id": task_id}
            if verb == "complete_step":
                args["step_id"] = f"{task_id}.0"
            if verb == "task":
                _, error = (None, None)
                try:
                    call(client.task(task_id=task_id))
                except BatonRequestError as caught:
                    error = caught
            else:
                _, error = self.send(verb, **args)
            self.expect(error is not None and error.code == 404, f"{verb} of nothing: {error}")

        @precondition(lambda self: self.tasks)
        @rule(index=st.integers(0, 9), delay=st.sampled_from([0.0, 3600.0]))
        def start(self, index: int, delay: float) -> None:
            task = self.pick(index)
            reply, error = self.send("start_task", task_id=task.task_id, delay_s=delay)
            if task.status != "running":
                self.expect(error is not None and error.code == 409, f"start of {task.status}")
            else:
                self.expect(error is None, f"start of a running task: {error}")
                self.expect(reply["status"] in ("queued", "no_next_step"), f"start: {reply}")

        @precondition(lambda self: self.tasks)
        @rule(index=st.integers(0, 9))
        def next(self, index: int) -> None:
            task = self.pick(index)
            reply, error = self.send("next_step", task_id=task.task_id)
            if task.status != "running":
                self.expect(error is not None and error.code == 409, f"next of {task.status}")
                return
            self.expect(error is None, f"next of a running task: {error}")
            self.expect(reply["status"] in ("queued", "completed", "no_next_step"), str(reply))
            if reply["status"] == "completed":
                self.set_status(task, "completed")

        @precondition(lambda self: self.tasks)
        @rule(index=st.integers(0, 9), plan=plans(), advance=st.booleans())
        def replan(self, index: int, plan: dict[str, Any], advance: bool) -> None:
            task = self.pick(index)
            reply, error = self.send(
                "replan_task", task_id=task.task_id, plan=plan, advance_next=advance
            )
            if task.status in ENDED or (advance and task.status != "running"):
                # Ended: no replan; queued: replanned, it could not advance as task.next does.
                self.expect(error is not None and error.code == 409, f"replan of {task.status}")
                return
            if error is not None:  # e.g. a current step made to wait on an unfinished one
                self.expect(error.reason == "invalid_plan", f"replan: {error}")
                return
            before = task.view
            current = [s for s in before.get("steps", ()) if s["status"] == "current"]
            if reply["sequential"] and not before.get("sequential", True) and len(current) > 1:
                task.switched = True
            task.sequential = reply["sequential"]
            self.expect(reply["sequential"] == is_sequential(plan), f"replan: {reply}")
            self.expect(set(reply["diff"]) == {"added", "changed", "removed"}, str(reply))
            self.set_status(task, reply["status"])

        @precondition(lambda self: self.tasks)
        @rule(
            index=st.integers(0, 9),
            step=st.integers(0, 9),
            verb=st.sampled_from(["complete", "fail", "skip", "retry"]),
            fence=st.sampled_from(["none", "none", "holder", "stale"]),
        )
        def step_command(self, index: int, step: int, verb: str, fence: str) -> None:
            task = self.pick(index)
            target = self.step_of(task, step)
            step_id = target["step_id"]
            held = task.claims.get(step_id)
            claim_id = None
            if verb != "retry" and fence == "stale":
                claim_id = self.stale_claim(task, step_id)
            elif verb != "retry" and fence == "holder" and held is not None:
                claim_id = held[0]
            kind = {"complete": c.CompleteStep, "fail": c.FailStep, "skip": c.SkipStep}
            payload = {"task_id": task.task_id, "step_id": step_id}
            if claim_id is not None:
                reply, error = self.send_to(
                    subject(kind[verb], f"step.{verb}"), {**payload, "claim_id": claim_id}
                )
            else:
                reply, error = self.send(f"{verb}_step", **payload)
            if fence == "stale" and claim_id is not None:
                self.expect_stale(verb, error)
                return
            # A claim with a short lease may lapse under the harness' feet (the step is then
            # pending, current-unclaimed or failed): only a 409 is then certain to be right.
            lease_at = target.get("lease_expires_at")
            volatile = lease_at is not None and lease_at < time.time() + 10
            if volatile and error is not None:
                self.expect(error.code == 409, f"{verb} of a lapsing step: {error}")
                return
            status = target["status"]
            allowed = {
                "complete": status == "current" or (status == "pending" and not target["blocked"]),
                "fail": status in ("pending", "current"),
                "skip": status in ("pending", "current", "failed"),
                "retry": status == "failed",
            }[verb]
            if task.status != "running" or not allowed:
                self.expect(
                    volatile or (error is not None and error.code == 409),
                    f"{verb} of a {status} step of a {task.status} task: {reply or error}",
                )
                if error is not None:
                    return
            self.expect(error is None, f"{verb} of a {status} step was refused: {error}")
            after = {"complete": "completed", "fail": "failed", "skip": "skipped"}
            expected = after.get(verb, "pending")
            if verb == "fail" and max(reply["attempts"], 1) < reply["max_attempts"]:
                expected = "pending"  # a failed attempt: its retry policy hands it out again
                self.expect("retry_at" in reply, f"a failed attempt without retry_at: {reply}")
            self.expect(reply["status"] == expected, f"{verb}: {reply}")
            if verb != "retry":
                task.drop_claim(step_id)
            self.set_status(task, reply["task_status"])

        @precondition(lambda self: self.tasks)
        @rule(
            index=st.integers(0, 9),
            by_session=st.booleans(),
            lease=st.sampled_from([LONG_LEASE_S, LONG_LEASE_S, SHORT_LEASE_S]),
        )
        def claim(self, index: int, by_session: bool, lease: float) -> None:
            task = self.pick(index)
            scope = {"session_id": task.session} if by_session else {"task_id": task.task_id}
            reply, error = self.send_to(
                subject(c.ClaimStep, "step.claim"),
                {"worker": f"{self.example}-w", "lease_s": lease, **scope},
            )
            self.expect(error is None, f"claim: {error}")
            for other in self.tasks:
                if other.session == task.session:
                    other.claimed = True
            self.record_claim(reply, lease)

        # Rules that act on held claims are not preconditioned on them: a lease may lapse at
        # any moment, and a precondition that changes with time makes Hypothesis' replays flaky.
        @precondition(lambda self: self.tasks)
        @rule(index=st.integers(0, 9), result=st.sampled_from([None, 1, {"rows": [1]}]))
        def complete_and_claim_next(self, index: int, result: Any) -> None:
            """One round trip per step: complete with the claim's id and claim the next."""
            held = self.held()
            if not held:
                return
            task, step_id, claim_id, lease = held[index % len(held)]
            reply, error = self.send_to(
                subject(c.CompleteStep, "step.complete"),
                {
                    "task_id": task.task_id,
                    "step_id": step_id,
                    "claim_id": claim_id,
                    "result": result,
                    "claim_next": True,
                    "worker": f"{self.example}-w",
                    "lease_s": LONG_LEASE_S,
                },
            )
            if error is not None:
                # Only a short lease may have lapsed meanwhile.
                self.expect(lease <= SHORT_LEASE_S, f"complete by the holder: {error}")
                self.expect_stale("complete", error)
                return
            task.drop_claim(step_id)
            self.expect(reply["status"] == "completed", f"complete: {reply}")
            self.expect(reply.get("result") == result, f"complete kept no result: {reply}")
            self.set_status(task, reply["task_status"])
            self.expect(set(reply.get("next") or {}) == {"step", "queue_status"}, str(reply))
            self.record_claim(reply["next"], LONG_LEASE_S)

        @precondition(lambda self: heartbeats and self.tasks)
        @rule(index=st.integers(0, 9), stale=st.booleans())
        def heartbeat(self, index: int, stale: bool) -> None:
            held = self.held()
            if not held:
                return
            task, step_id, claim_id, lease = held[index % len(held)]
            if stale:
                claim_id = self.stale_claim(task, step_id)
            payload = {"task_id": task.task_id, "step_id": step_id, "claim_id": claim_id}
            reply, error = self.send_to(heartbeat_subject, {**payload, "lease_s": LONG_LEASE_S})
            if stale or (error is not None and lease <= SHORT_LEASE_S):
                self.expect_stale("heartbeat", error)
                return
            self.expect(error is None, f"heartbeat by the holder: {error}")
            self.expect(
                reply.get("claim_id") == claim_id
                and reply["lease_expires_at"] >= time.time() + LONG_LEASE_S - 30,
                f"heartbeat did not extend the lease: {reply}",
            )
            task.claims[step_id] = (claim_id, LONG_LEASE_S)

        @precondition(lambda self: self.tasks)
        @rule(index=st.integers(0, 9))
        def claim_and_let_the_lease_lapse(self, index: int) -> None:
            """A short lease nobody renews lapses: the service ends it (``fetch`` checks how),
            and the old holder is fenced off."""
            task = self.pick(index)
            reply, error = self.send_to(
                subject(c.ClaimStep, "step.claim"),
                {"worker": f"{self.example}-w", "lease_s": SHORT_LEASE_S, "task_id": task.task_id},
            )
            self.expect(error is None, f"claim: {error}")
            task.claimed = True
            self.record_claim(reply, SHORT_LEASE_S)
            if reply["step"] is None:
                return
            step_id, claim_id = reply["step"]["step_id"], reply["step"]["claim_id"]
            deadline = time.monotonic() + LAPSE_WAIT_S
            while step_id in task.claims:
                self.expect(time.monotonic() < deadline, f"lease of {step_id} never lapsed")
                time.sleep(0.1)
                task.view = self.fetch(task)
            reply, error = self.send_to(
                subject(c.CompleteStep, "step.complete"),
                {"task_id": task.task_id, "step_id": step_id, "claim_id": claim_id},
            )
            self.expect_stale("complete", error)

        def lost(self, task: TaskModel, step_id: str, claim_id: str) -> None:
            """A claim the harness held no longer holds: if it lapsed, the service ended it
            once, and the step was handed out again as its retry policy says."""
            events = call(client.history(task_id=task.task_id))["events"]
            lapses = [
                e
                for e in events
                if e["type"] == "ClaimExpired" and e["data"].get("claim_id") == claim_id
            ]
            if not lapses:  # it was completed, failed or skipped (or its task ended)
                return
            self.expect(len(lapses) == 1, f"claim {claim_id} lapsed {len(lapses)} times")
            lapse = lapses[0]
            report.count(f"lapse: {lapse['data']['outcome']}")
            then = call(client.history(task_id=task.task_id, version=lapse["version"]))["task"]
            step = next(s for s in then["steps"] if s["step_id"] == step_id)
            attempts, limit = step["attempts"], step["max_attempts"]
            outcome = (
                "failed"
                if limit > 1 and attempts >= limit
                else ("current" if then["sequential"] and limit == 1 else "ready")
            )
            self.expect(lapse["data"]["outcome"] == outcome, f"lapse of {step}: {lapse}")
            status = {"failed": "failed", "current": "current", "ready": "pending"}[outcome]
            self.expect(
                step["status"] == status and "claimed_by" not in step and "claim_id" not in step,
                f"after a lapse ({outcome}) the step is {step}",
            )

        @precondition(lambda self: self.tasks)
        @rule(index=st.integers(0, 9), verb=st.sampled_from(["complete", "fail", "cancel"]))
        def end(self, index: int, verb: str) -> None:
            task = self.pick(index)
            reply, error = self.send(f"{verb}_task", task_id=task.task_id)
            if task.status in ENDED:
                self.expect(error is not None and error.code == 409, f"{verb} of {task.status}")
                return
            self.expect(error is None, f"{verb} of a {task.status} task: {error}")
            expected = {"complete": "completed", "fail": "error", "cancel": "cancelled"}[verb]
            self.expect(reply["status"] == expected, f"{verb}: {reply['status']}")
            if verb == "cancel":
                left = [s["step_name"] for s in reply["steps"] if s["status"] in ("pending",)]
                self.expect(not left, f"cancel left pending steps {left}")
            self.set_status(task, expected)

        @precondition(lambda self: self.tasks)
        @rule(index=st.integers(0, 9), key=st.sampled_from(["k", "j"]), value=st.integers())
        def context(self, index: int, key: str, value: int) -> None:
            task = self.pick(index)
            reply, error = self.send("add_context", task_id=task.task_id, key=key, value=value)
            if task.status in ENDED:
                self.expect(error is not None and error.code == 409, f"context of {task.status}")
                return
            self.expect(error is None, f"context: {error}")
            self.expect(reply["context"].get(key) == value, "context not added")

        # -- laws ------------------------------------------------------------------------------
        def teardown(self) -> None:
            """Leaves nothing live behind: every task this sequence made and did not end is
            cancelled (a real worker must never find a harness step)."""
            for task in self.tasks:
                if task.status not in ENDED:
                    with contextlib.suppress(Exception):
                        call(client.cancel_task(task_id=task.task_id, reason="harness cleanup"))

        @invariant()
        def laws(self) -> None:
            for task in self.tasks:
                view = self.fetch(task)
                task.view = view
                self.expect(
                    view["status"] == task.status,
                    f"{task.task_id} is {view['status']}; the model says {task.status}",
                )
                self.check_view(task, view)
                events = call(client.history(task_id=task.task_id))["events"]
                lapsed = [e["data"]["claim_id"] for e in events if e["type"] == "ClaimExpired"]
                self.expect(
                    len(lapsed) == len(set(lapsed)), f"{task.task_id}: a claim lapsed twice"
                )
                versions = [e["version"] for e in events]
                self.expect(
                    versions == list(range(1, view["version"] + 1)),
                    f"{task.task_id}: history versions {versions}",
                )
                then = call(client.history(task_id=task.task_id, version=view["version"]))
                self.expect(
                    then["task"]["version"] == view["version"]
                    and [s["status"] for s in then["task"]["steps"]]
                    == [s["status"] for s in view["steps"]]
                    and then["task"]["status"] == view["status"],
                    f"{task.task_id}: the view at version {view['version']} is not the view",
                )

        def check_view(self, task: TaskModel, view: dict[str, Any]) -> None:
            steps = {s["step_name"]: s for s in view["steps"]}
            current = [s for s in view["steps"] if s["status"] == "current"]
            if (view["sequential"] and not task.switched) or not task.claimed:
                self.expect(len(current) <= 1, f"{task.task_id}: {len(current)} current steps")
            done = SEQUENTIAL_SATISFIED if view["sequential"] else SATISFIED
            for step in view["steps"]:
                expected = {
                    d: steps[d]["result"]
                    for d in step["depends_on"]
                    if d in steps
                    and steps[d]["status"] == "completed"
                    and steps[d].get("result") is not None
                }
                self.expect(
                    step["context"] == expected,
                    f"{step['step_id']}: context {step['context']}, not its dependencies' "
                    f"results {expected}",
                )
                if "claim_id" in step:
                    self.expect(
                        step["status"] == "current" and step.get("lease_expires_at"),
                        f"{step['step_id']} holds a claim while {step['status']}",
                    )
                if "retry_at" in step:
                    self.expect(step["status"] == "pending", f"{step['step_id']}: retry_at")
            if view["status"] != "running":
                self.expect(
                    not [s for s in view["steps"] if s["ready"]],
                    f"{task.task_id}: ready steps in a {view['status']} task",
                )
            for step in current:
                waiting = [
                    d for d in step["depends_on"] if d in steps and steps[d]["status"] not in done
                ]
                self.expect(not waiting, f"{step['step_id']} is current, waiting on {waiting}")
            if view["status"] == "running":
                self.expect(
                    not all(s["status"] in FINISHED for s in view["steps"]),
                    f"{task.task_id}: every step finished but the task is still running",
                )

    return BatonContract


def run_harness(
    nats_url: str,
    prefix: str = "baton",
    examples: int = 50,
    *,
    steps: int = 20,
    timeout: float = 10.0,
    connect_options: dict[str, Any] | None = None,
    derandomize: bool = False,
) -> HarnessReport:
    """Runs the state machine against the deployment at ``nats_url``; returns the report (its
    ``failure`` and ``program`` name the first contract break, shrunk). ``derandomize`` makes
    the command sequences the same on every run (for repeatable checks)."""
    from hypothesis.stateful import run_state_machine_as_test

    report = HarnessReport(nats_url, prefix, f"harness-{uuid.uuid4().hex[:8]}", examples)
    runner = LoopThread()
    started = time.monotonic()
    try:
        client = runner.run(
            BatonClient.connect(nats_url, prefix=prefix, timeout=timeout, **(connect_options or {}))
        )
        try:
            machine = make_machine(runner, client, report)
            lines: list[object] = []
            try:
                with with_reporter(lines.append):
                    run_state_machine_as_test(
                        machine,
                        settings=settings(
                            max_examples=examples,
                            stateful_step_count=steps,
                            deadline=None,
                            database=None,
                            derandomize=derandomize,
                            suppress_health_check=list(HealthCheck),
                            print_blob=False,
                        ),
                    )
            except Exception as error:  # a break (or the deployment failing): report it
                report.failure = f"{type(error).__name__}: {error}"
                # Real time (leases) can make a replay differ: name the breaks themselves.
                for inner in getattr(error, "exceptions", ()):
                    report.failure += f"\n  {type(inner).__name__}: {inner}"
                notes = [*lines, *getattr(error, "__notes__", [])]
                report.program = [line for text in notes for line in str(text).splitlines()]
        finally:
            runner.run(client.close())
    finally:
        runner.close()
        report.seconds = time.monotonic() - started
    return report


async def run_harness_async(
    nats_url: str, prefix: str = "baton", examples: int = 50, **options: Any
) -> HarnessReport:
    """``run_harness`` from a coroutine (it runs in a worker thread)."""
    return await asyncio.to_thread(run_harness, nats_url, prefix, examples, **options)


def main(argv: Sequence[str] | None = None) -> int:
    """``--nats URL --prefix P --examples N``: prints the report; 0 when no break was found."""
    parser = argparse.ArgumentParser(
        prog="baton harness",
        description="Check a running Baton deployment against the contract's laws.",
    )
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="the NATS server URL")
    parser.add_argument("--prefix", default="baton", help="the deployment's subject prefix")
    parser.add_argument("--examples", type=int, default=50, help="command sequences to try")
    parser.add_argument("--steps", type=int, default=20, help="commands per sequence, at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, in seconds")
    args = parser.parse_args(argv)
    report = run_harness(
        args.nats, args.prefix, args.examples, steps=args.steps, timeout=args.timeout
    )
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
