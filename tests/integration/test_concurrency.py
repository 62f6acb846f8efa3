"""Several threads working the same task at once end consistent, on SQLite and PostgreSQL.

Conflicting saves raise IntegrityError inside BatonApp, which re-runs the command on fresh state;
a command that keeps losing is reported as ConcurrentChange (409) and the worker retries it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.config import Settings, event_store_env
from baton.domain import commands as c
from baton.domain.errors import ConcurrentChange, InvalidTransition
from baton.domain.services import BatonApp

WORKERS = 6
STEPS = 18


@pytest.fixture(params=["sqlite", "postgres", "postgres-two-instances"])
def apps(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[BatonApp]]:
    """One app per worker thread: shared on SQLite (one app per file), or two instances."""
    if request.param == "sqlite":
        env = event_store_env(Settings(data_dir=tmp_path))
        instances = [BatonApp(env)]
    else:
        db = request.getfixturevalue("postgres_db")
        env = event_store_env(Settings(data_dir=tmp_path, postgres_url=db["url"]))
        instances = [BatonApp(env) for _ in range(2 if request.param.endswith("instances") else 1)]
    try:
        yield [instances[i % len(instances)] for i in range(WORKERS)]
    finally:
        for app in instances:
            app.close()


def plan() -> dict[str, Any]:
    # Two layers of independent steps, and a last one waiting for all of them.
    first = [{"step_name": f"a{i}", "depends_on": []} for i in range(STEPS // 2)]
    second = [{"step_name": f"b{i}", "depends_on": [f"a{i}"]} for i in range(STEPS // 2)]
    last = [{"step_name": "z", "depends_on": [s["step_name"] for s in first + second]}]
    return {"steps": first + second + last}


def test_threads_claiming_failing_and_completing_steps_of_one_task_end_consistent(apps):
    task_id = apps[0].handle(c.CreateTask(task_name="race", plan=plan()))["task_id"]
    claims: list[tuple[str, int, str]] = []
    completed_by_me: list[str] = []
    conflicts = Counter[str]()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def call(app: BatonApp, command: c.Command) -> Any:
        while True:
            try:
                return app.handle(command)
            except ConcurrentChange:
                with lock:
                    conflicts["reported"] += 1

    def work(index: int) -> None:
        app, name, rng = apps[index], f"w{index}", random.Random(index)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                reply = call(app, c.ClaimStep(task_id=task_id, worker=name))
                step = reply["step"]
                if step is None:
                    if reply["queue_status"] == "done":
                        return
                    # another worker holds a step, or failed one and is about to retry it
                    assert reply["queue_status"] in {"blocked", "failed"}, reply
                    time.sleep(0.002)
                    continue
                with lock:
                    claims.append((step["step_id"], step["attempts"], name))
                if rng.random() < 0.2:
                    call(app, c.FailStep(task_id=task_id, step_id=step["step_id"], message="x"))
                    call(app, c.RetryStep(task_id=task_id, step_id=step["step_id"]))
                    continue
                done = call(
                    app, c.CompleteStep(task_id=task_id, step_id=step["step_id"], result=name)
                )
                assert done["status"] == "completed"
                with lock:
                    completed_by_me.append(step["step_id"])
            raise AssertionError(f"{name} never saw the task done")
        except BaseException as error:  # reported to the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    fresh = BatonApp(apps[0].env)  # reads the store, not any instance's cache
    try:
        view = fresh.task_view(task_id)
        history = fresh.history(task_id)
    finally:
        fresh.close()
    assert view == apps[0].task_view(task_id)
    assert view["status"] == "completed"
    assert all(s["status"] == "completed" for s in view["steps"])
    assert [e["version"] for e in history] == list(range(1, view["version"] + 1))
    completions = Counter(e["step_id"] for e in history if e["type"] == "StepCompleted")
    assert set(completions.values()) == {1} and len(completions) == STEPS + 1
    assert sorted(completed_by_me) == sorted(completions)
    # A step is handed to one worker per attempt: never claimed twice at once.
    assert len({(step_id, attempt) for step_id, attempt, _ in claims}) == len(claims)
    claimed_events = [e for e in history if e["type"] == "StepClaimed"]
    assert len(claimed_events) == len(claims)
    for s in view["steps"]:
        assert s["result"] == s["claimed_by"]


def test_racing_completions_of_one_step_succeed_exactly_once(apps):
    app = apps[0]
    task_id = app.handle(
        c.CreateTask(
            task_name="race", plan={"steps": [{"step_name": "only"}, {"step_name": "next"}]}
        )
    )["task_id"]
    step_id = f"{task_id}.0"
    barrier = threading.Barrier(WORKERS)
    outcomes: list[str] = []

    def complete(index: int) -> None:
        barrier.wait()
        try:
            apps[index].handle(c.CompleteStep(task_id=task_id, step_id=step_id, result=index))
            outcomes.append("ok")
        except InvalidTransition:
            outcomes.append("409")
        except ConcurrentChange:
            outcomes.append("conflict")

    threads = [threading.Thread(target=complete, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1
    assert sorted(set(outcomes) - {"ok"}) <= ["409", "conflict"]
    history = app.history(task_id)
    assert [e["type"] for e in history].count("StepCompleted") == 1
    assert [e["version"] for e in history] == list(range(1, len(history) + 1))
