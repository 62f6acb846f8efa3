"""Contention: 30 clients at once claiming, completing, failing, retrying, skipping, advancing
and replanning the steps of the same two tasks (a dependency graph and a sequential plan)
through one live service. No invariant breaks: no step activation claimed twice, at most one
current step in the sequential plan at every version, no step current while a dependency is
unfinished, versions contiguous; every refusal is the contract's 409 (or a 400 for a replan the
task's state no longer allows)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonClient, BatonRequestError
from tests.faults.support import SOAK, ServiceProcess, emit, new_prefix

CLIENTS = 30
ROUNDS = 80 if SOAK else 20

FINISHED = {"completed", "skipped", "cancelled"}
SATISFIED = {"completed", "skipped"}


def graph_plan(names: list[str]) -> dict[str, Any]:
    steps = [{"step_name": n, "description": f"do {n}", "depends_on": []} for n in names]
    steps.append({"step_name": "final", "description": "sum up", "depends_on": names})
    return {"steps": steps}


def check_view(view: dict[str, Any], sequential: bool) -> None:
    """The laws every version of a task's view obeys."""
    steps = {s["step_name"]: s for s in view["steps"]}
    current = [s for s in view["steps"] if s["status"] == "current"]
    if sequential:
        assert len(current) <= 1, [s["step_name"] for s in current]
    # In a sequential plan a step waits for the earlier ones to be completed, skipped or
    # cancelled (a replan's cancelled step is done with); in a graph, cancelled never satisfies.
    satisfied = SATISFIED | {"cancelled"} if sequential else SATISFIED
    for step in current:
        unfinished = [
            d for d in step["depends_on"] if d in steps and steps[d]["status"] not in satisfied
        ]
        assert not unfinished, (step["step_name"], unfinished)
    if view["status"] == "completed":
        assert all(s["status"] in FINISHED for s in view["steps"])


class Contender:
    def __init__(self, client: BatonClient, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.claims: list[tuple[str, str, str]] = []  # step_id, parent_action_id, worker
        self.refusals: Counter[str] = Counter()
        self.applied = 0

    async def attempt(self, method: str, **args: Any) -> Any:
        try:
            reply = await getattr(self.client, method)(**args)
        except BatonRequestError as error:
            key = f"{error.code} {error.reason}"
            assert key in {
                "409 invalid_transition",
                "409 concurrent_change",
                "400 invalid_plan",
            }, f"{method}: {error}"
            self.refusals[key] += 1
            return None
        self.applied += 1
        return reply

    async def work_graph(self, task_id: str, worker: str) -> None:
        claimed = await self.attempt("claim_step", task_id=task_id, worker=worker)
        if claimed is None or claimed["step"] is None:
            return
        step = claimed["step"]
        self.claims.append((step["step_id"], step["parent_action_id"], worker))
        roll = self.rng.random()
        if roll < 0.7:
            await self.attempt("complete_step", task_id=task_id, step_id=step["step_id"])
        elif roll < 0.85:
            await self.attempt("fail_step", task_id=task_id, step_id=step["step_id"])
            await self.attempt("retry_step", task_id=task_id, step_id=step["step_id"])
        else:
            await self.attempt("skip_step", task_id=task_id, step_id=step["step_id"])

    async def replan_graph(self, task_id: str, n: int) -> None:
        view = await self.client.task(task_id=task_id)
        names = [s["step_name"] for s in view["steps"] if s["step_name"] != "final"]
        open_names = [
            s["step_name"]
            for s in view["steps"]
            if s["status"] in ("pending", "current") and s["step_name"] != "final"
        ]
        keep = [m for m in names if not (open_names and m == self.rng.choice(open_names))]
        await self.attempt("replan_task", task_id=task_id, plan=graph_plan([*keep, f"extra-{n}"]))

    async def work_sequential(self, task_id: str, worker: str) -> None:
        roll = self.rng.random()
        if roll < 0.4:
            await self.attempt("next_step", task_id=task_id)
        elif roll < 0.8:
            claimed = await self.attempt("claim_step", task_id=task_id, worker=worker)
            if claimed and claimed["step"]:
                step = claimed["step"]
                self.claims.append((step["step_id"], step["parent_action_id"], worker))
                await self.attempt("complete_step", task_id=task_id, step_id=step["step_id"])
        else:
            view = await self.client.task(task_id=task_id)
            names = [s["step_name"] for s in view["steps"]]
            plan = {"steps": [{"step_name": m, "description": f"do {m}"} for m in names]}
            plan["steps"].append({"step_name": f"more-{self.rng.randrange(10**6)}"})
            await self.attempt("replan_task", task_id=task_id, plan=plan)


async def check_every_version(client: BatonClient, task_id: str, sequential: bool) -> int:
    view = await client.task(task_id=task_id)
    events = (await client.history(task_id=task_id))["events"]
    assert [e["version"] for e in events] == list(range(1, view["version"] + 1))
    # A step activation (between two StepStarted of the step) is claimed at most once.
    claims: Counter[tuple[str, int]] = Counter()
    activation: Counter[str] = Counter()
    for event in events:
        if event["type"] == "StepStarted":
            activation[event["step_id"]] += 1
        elif event["type"] == "StepClaimed":
            claims[(event["step_id"], activation[event["step_id"]])] += 1
    assert all(n == 1 for n in claims.values()), claims.most_common(3)
    versions = await asyncio.gather(
        *(client.history(task_id=task_id, version=v) for v in range(1, view["version"] + 1))
    )
    for past in versions:
        check_view(past["task"], sequential)
    return len(versions)


async def test_thirty_clients_racing_on_one_task_break_no_invariant(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = ServiceProcess(nats_url, tmp_path / "data", new_prefix())
    await asyncio.to_thread(service.start)
    try:
        clients = [
            await BatonClient.connect(nats_url, prefix=service.prefix, timeout=30)
            for _ in range(CLIENTS)
        ]
        try:
            first = clients[0]
            graph = await first.create_task(
                task_name="graph", plan=graph_plan([f"g{i}" for i in range(30)])
            )
            seq_plan = {"steps": [{"step_name": f"s{i}", "description": "x"} for i in range(40)]}
            seq = await first.create_task(task_name="sequential", plan=seq_plan)
            contenders = [Contender(c, random.Random(i)) for i, c in enumerate(clients)]

            async def play(i: int, contender: Contender) -> None:
                for r in range(ROUNDS):
                    if i % 10 == 0 and r % 4 == 0:
                        await contender.replan_graph(graph["task_id"], i * 1000 + r)
                    elif i % 2:
                        await contender.work_graph(graph["task_id"], f"w{i}")
                    else:
                        await contender.work_sequential(seq["task_id"], f"w{i}")

            await asyncio.gather(*(play(i, c) for i, c in enumerate(contenders)))

            claims = [claim for c in contenders for claim in c.claims]
            activations = Counter((step_id, action) for step_id, action, _ in claims)
            assert activations and max(activations.values()) == 1, activations.most_common(3)
            checked = await check_every_version(first, graph["task_id"], sequential=False)
            checked += await check_every_version(first, seq["task_id"], sequential=True)
        finally:
            for client in clients:
                await client.close()
        assert await asyncio.to_thread(service.terminate) == 0
    finally:
        service.kill()
    refusals = sum((c.refusals for c in contenders), Counter())
    applied = sum(c.applied for c in contenders)
    assert applied > CLIENTS, "the clients got nothing done"
    assert refusals, "no conflict arose: no contention was tested"
    emit(
        capsys,
        f"contention: {CLIENTS} clients, {applied} commands applied, {len(claims)} claims each "
        f"of a distinct step activation, {sum(refusals.values())} conflicts refused "
        f"({dict(refusals)}), {checked} task versions checked",
    )
