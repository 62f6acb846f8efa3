"""Workers that die (#14): worker processes running the worker loop are SIGKILLed mid-step under
load, and the service is SIGKILLed while leases are running out. Every step still ends completed
exactly once, by the claim that held it; no step is ever held by two live claims at once; and
each lapse is in the history once, for the claim that lapsed."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonClient
from tests.faults.support import SOAK, ServiceProcess, emit, new_prefix, retrying
from tests.processes import ROOT, around_traceback

TASKS = 30 if SOAK else 6
WORKERS = 4
CONCURRENCY = 3
LEASE_S = 1.0
WORKER_KILLS = 20 if SOAK else 4

#: x and y at once, then z, then w; every step retried on each failed attempt or lapse.
POLICY = {"max_attempts": 100, "retry_delay_s": 0}
PLAN = {
    "steps": [
        {"step_name": "x", "description": "do x", "depends_on": [], **POLICY},
        {"step_name": "y", "description": "do y", "depends_on": [], **POLICY},
        {"step_name": "z", "description": "do z", "depends_on": ["x", "y"], **POLICY},
        {"step_name": "w", "description": "do w", "depends_on": ["z"], **POLICY},
    ]
}

#: Events after which a step is held by no claim.
RELEASING = {
    "StepCompleted",
    "StepAttemptFailed",
    "StepFailed",
    "StepSkipped",
    "StepCancelled",
    "StepRetried",
}


class Workers:
    """Worker processes (``tests.faults.worker_process``), each logging to its own file."""

    def __init__(self, nats_url: str, prefix: str, log_dir: Path) -> None:
        self.nats_url = nats_url
        self.prefix = prefix
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0
        self.killed = 0

    def log_of(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_log(self, name: str, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_of(name):
            assert self.running[name].poll() is None, f"{name} died:\n{self.log_of(name)}"
            assert time.monotonic() < deadline, f"{name} never logged {text!r}"
            await asyncio.sleep(0.05)

    def claims(self) -> dict[str, int]:
        """How many claims each running worker has logged."""
        return {name: self.log_of(name).count("claimed step") for name in self.running}

    def start(self) -> str:
        """Starts a worker (it connects in the background)."""
        self.started += 1
        name = f"worker-{self.started}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        with (self.log_dir / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.worker_process", self.nats_url,
                 self.prefix, name, str(CONCURRENCY), str(LEASE_S)],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip
        return name

    async def kill_mid_step(self, more_work: Callable[[], Awaitable[None]]) -> str:
        """Adds work, then SIGKILLs the first worker to claim a step of it, a moment after
        the claim (its handlers take 0.1-0.5 s: so mid-step), and starts a replacement."""
        before = self.claims()
        await more_work()
        deadline = time.monotonic() + 30
        while True:
            now = self.claims()
            claimed = [n for n in now if now[n] > before.get(n, 0)]
            if claimed:
                break
            assert time.monotonic() < deadline, "no worker claimed the new work"
            await asyncio.sleep(0.02)
        name = random.choice(claimed)
        await asyncio.sleep(random.uniform(0.02, 0.15))
        process = self.running.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.killed += 1
        self.start()
        return name

    def stop_all(self) -> None:
        for process in self.running.values():
            process.send_signal(signal.SIGTERM)
        for name, process in self.running.items():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"{name} did not stop on SIGTERM") from None
        self.running.clear()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


async def held_claims(client: BatonClient, task_ids: list[str]) -> int:
    views = await asyncio.gather(*(client.task(task_id=t) for t in task_ids))
    return sum(1 for v in views for s in v["steps"] if s.get("claim_id"))


async def all_completed(client: BatonClient, task_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        views = await retrying(lambda: asyncio.gather(*(client.task(task_id=t) for t in task_ids)))
        left = [v["task_id"] for v in views if v["status"] != "completed"]
        if not left:
            return
        assert time.monotonic() < deadline, f"tasks not completed in time: {left}"
        await asyncio.sleep(0.2)


def check_history(task_id: str, events: list[dict[str, Any]]) -> Counter[str]:
    """Walks one task's history: at most one live claim per step at any time, each lapse once
    and of the claim then live, each step completed once by the claim then live."""
    held: dict[str, str | None] = {}
    lapsed: set[str] = set()
    seen: Counter[str] = Counter()
    completed: Counter[str] = Counter()
    for event in events:
        kind, data = event["type"], event.get("data") or {}
        step = data.get("step_id")
        seen[kind] += 1
        if kind == "StepClaimed":
            assert held.get(step) is None, f"{task_id}: {step} claimed while {held[step]} held it"
            held[step] = data["claim_id"]
        elif kind == "ClaimRenewed":
            assert held.get(step) == data["claim_id"], f"{task_id}: renewed a claim not held"
        elif kind == "ClaimExpired":
            claim = data["claim_id"]
            assert held.get(step) == claim, f"{task_id}: {claim} lapsed but did not hold {step}"
            assert claim not in lapsed, f"{task_id}: {claim} lapsed twice"
            lapsed.add(claim)
            held[step] = None
        elif kind in RELEASING:
            if kind == "StepCompleted":
                completed[step] += 1
                assert data["result"]["claim_id"] == held.get(step), (
                    f"{task_id}: {step} completed by {data['result']} while {held.get(step)} "
                    "held it"
                )
            held[step] = None
    steps = [f"{task_id}.{i}" for i in range(len(PLAN["steps"]))]
    assert {s: completed[s] for s in steps} == dict.fromkeys(steps, 1), (task_id, completed)
    return seen


async def test_killed_workers_and_a_killed_service_complete_every_step_exactly_once(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = new_prefix()
    service = ServiceProcess(nats_url, tmp_path / "data", prefix)
    service.start()
    log_dir = tmp_path / "worker-logs"
    log_dir.mkdir()
    workers = Workers(nats_url, prefix, log_dir)
    client = await BatonClient.connect(nats_url, prefix=prefix, timeout=5)
    try:
        task_ids: list[str] = []

        async def create(count: int) -> None:
            for _ in range(count):
                n = len(task_ids)
                view = await client.create_task(task_name=f"t{n}", session_id=f"s{n}", plan=PLAN)
                task_ids.append(view["task_id"])

        for _ in range(WORKERS):
            workers.start()
        for name in list(workers.running):
            await workers.wait_log(name, f"{name} ready", timeout=60)
        started = time.monotonic()
        await create(TASKS)

        # Workers SIGKILLed mid-step (each runs up to CONCURRENCY steps at once), replaced.
        for _ in range(WORKER_KILLS):
            await workers.kill_mid_step(lambda: create(2))

        # The service SIGKILLed while claims are held: their leases run out while it is down.
        await create(TASKS // 2)
        deadline = time.monotonic() + 10
        while await held_claims(client, task_ids) == 0:
            assert time.monotonic() < deadline, "no claim held to kill the service under"
            await asyncio.sleep(0.05)
        held_at_kill = await held_claims(client, task_ids)
        service.sigkill()
        await asyncio.sleep(LEASE_S * 1.5)
        service.start()

        await workers.kill_mid_step(lambda: create(2))

        await all_completed(client, task_ids, timeout=90)
        elapsed = time.monotonic() - started
        workers.stop_all()

        totals: Counter[str] = Counter()
        for task_id in task_ids:
            events = (await client.history(task_id=task_id))["events"]
            totals += check_history(task_id, events)
        assert totals["StepCompleted"] == len(task_ids) * len(PLAN["steps"])
        assert totals["ClaimExpired"] >= 1, "no lease lapsed: the kills interrupted nothing"
        assert (
            totals["StepClaimed"]
            == totals["StepCompleted"] + totals["ClaimExpired"] + (totals["StepAttemptFailed"])
        ), totals
        logs = workers.logs()
        assert "Traceback" not in logs, around_traceback(logs)
        emit(
            capsys,
            f"workers: {len(task_ids)} tasks x {len(PLAN['steps'])} steps, {WORKERS} workers x "
            f"{CONCURRENCY}, lease {LEASE_S:g} s, {workers.killed} workers and the service "
            f"(holding {held_at_kill} claims) SIGKILLed: {totals['StepClaimed']} claims, "
            f"{totals['ClaimExpired']} lapses, {totals['ClaimRenewed']} heartbeats, every step "
            f"completed once in {elapsed:.1f} s",
        )
    finally:
        for process in workers.running.values():
            process.kill()
            process.wait()
        await client.close()
        service.kill()
