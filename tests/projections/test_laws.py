"""Laws of the projections over random command sequences, on SQLite and PostgreSQL."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baton.adapters.config import Settings, event_store_env
from baton.domain import commands as c
from baton.domain.errors import BatonError
from baton.domain.services import BatonApp
from baton.projections import Projections
from tests.projections.conftest import new_schema

SESSIONS = ["s0", "s1", "s2"]
PLANS: list[dict[str, Any]] = [
    {"steps": [{"step_name": "a"}, {"step_name": "b"}, {"step_name": "c"}]},
    {
        "steps": [
            {"step_name": "a", "depends_on": []},
            {"step_name": "b", "depends_on": []},
            {"step_name": "c", "depends_on": ["a", "b"]},
        ]
    },
    {"steps": [{"step_name": "b"}, {"step_name": "d", "description": "new"}]},
    {"steps": [{"step_name": "x", "depends_on": []}]},
    {
        "steps": [
            {"step_name": "a", "depends_on": [], "max_attempts": 2, "retry_delay_s": 0},
            {"step_name": "e", "depends_on": ["a"], "max_attempts": 3, "retry_delay_s": 5},
        ]
    },
]

index = st.integers(min_value=0, max_value=7)
creates = st.tuples(
    st.just("create"),
    st.sampled_from(SESSIONS),
    st.integers(0, 3),
    st.integers(0, len(PLANS) - 2),
)
operations = st.one_of(
    creates,
    st.tuples(
        st.just("start"), index, st.sampled_from([0.0, 3600.0]), st.none() | st.integers(0, 3)
    ),
    st.tuples(st.just("next"), index),
    st.tuples(
        st.just("step"), st.sampled_from(["complete", "fail", "skip", "retry"]), index, index
    ),
    st.tuples(st.just("claim"), st.sampled_from(["task", "session", "global"]), index),
    st.tuples(st.just("replan"), index, st.integers(0, len(PLANS) - 1), st.booleans()),
    st.tuples(st.just("end"), st.sampled_from(["complete", "fail", "cancel"]), index),
    st.tuples(st.just("context"), index, st.sampled_from(["k", "j"]), st.integers(0, 9)),
    st.tuples(st.just("publish"), index),
    st.tuples(st.just("catch_up")),
    st.tuples(st.just("lease"), index),
    st.tuples(st.just("heartbeat"), index, index),
    st.tuples(st.just("complete_next"), index, index),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 2.0, 10.0])),
    st.tuples(st.just("expire")),
)


class Clock:
    """The application's clock, moved by the ``tick`` operation (never ahead of real time,
    which the views' queue compares ``ready_at`` with)."""

    def __init__(self) -> None:
        self.now = time.time() - 3600

    def __call__(self) -> float:
        return self.now


def apply(app: BatonApp, views: Projections, tasks: list[str], op: tuple[Any, ...]) -> None:
    """Runs one random operation; rejected commands are part of the game."""
    kind = op[0]

    def task(i: int) -> str:
        return tasks[i % len(tasks)] if tasks else "no-task"

    command: c.Command
    if kind == "catch_up":
        views.catch_up()
        return
    if kind == "publish":
        due = views.due_triggers(time.time() + 1, 10)
        if due:
            views.mark_trigger_published(due[op[1] % len(due)]["trigger_id"])
        return
    if kind == "tick":
        clock = app.clock
        assert isinstance(clock, Clock)
        clock.now += op[1]
        return
    if kind == "expire":
        views.catch_up()
        for lapsed in views.lapsed_claims(app.clock()):
            app.handle(c.ExpireClaim(**lapsed))
        return
    if kind == "lease":
        command = c.ClaimStep(task_id=task(op[1]), worker="w", lease_s=1)
    elif kind in ("heartbeat", "complete_next"):
        try:
            held = [s for s in app.task_view(task(op[1]))["steps"] if s.get("claim_id") is not None]
        except BatonError:
            return
        if not held:
            return
        claimed = held[op[2] % len(held)]
        if kind == "heartbeat":
            command = c.HeartbeatStep(
                task_id=claimed["task_id"],
                step_id=claimed["step_id"],
                claim_id=claimed["claim_id"],
                lease_s=1,
            )
        else:
            command = c.CompleteStep(
                task_id=claimed["task_id"],
                step_id=claimed["step_id"],
                claim_id=claimed["claim_id"],
                claim_next=True,
                lease_s=1,
            )
    elif kind == "create":
        _, session, priority, plan = op
        command = c.CreateTask(
            task_name="t", session_id=session, priority=priority, plan=PLANS[plan]
        )
    elif kind == "start":
        command = c.StartTask(task_id=task(op[1]), delay_s=op[2], priority=op[3])
    elif kind == "next":
        command = c.NextStep(task_id=task(op[1]))
    elif kind == "step":
        _, verb, t, s = op
        task_id = task(t)
        step_id = f"{task_id}.{s % 5}"
        kinds = {
            "complete": c.CompleteStep,
            "fail": c.FailStep,
            "skip": c.SkipStep,
            "retry": c.RetryStep,
        }
        command = kinds[verb](task_id=task_id, step_id=step_id)
    elif kind == "claim":
        _, scope, t = op
        if scope == "task":
            command = c.ClaimStep(task_id=task(t), worker="w")
        elif scope == "session":
            command = c.ClaimStep(session_id=SESSIONS[t % len(SESSIONS)], worker="w")
        else:
            command = c.ClaimStep(worker="w")
    elif kind == "replan":
        _, t, plan, advance = op
        command = c.ReplanTask(task_id=task(t), plan=PLANS[plan], advance_next=advance)
    elif kind == "end":
        _, verb, t = op
        ends = {"complete": c.CompleteTask, "fail": c.FailTask, "cancel": c.CancelTask}
        command = ends[verb](task_id=task(t))
    else:
        _, t, key, value = op
        command = c.AddContext(task_id=task(t), key=key, value=value)
    try:
        reply = app.handle(command)
    except BatonError:
        return
    if kind == "create":
        tasks.append(reply["task_id"])


def check_incremental_equals_rebuild(
    open_app: Callable[[], BatonApp], ops: list[tuple[Any, ...]], batch_size: int, cache: int
) -> None:
    app = open_app()
    live = Projections(app, batch_size=batch_size, cache_size=cache)
    app.ready_work = live
    fresh = Projections(app)
    try:
        tasks: list[str] = []
        for op in ops:
            apply(app, live, tasks, op)
        live.catch_up()
        assert live.lag()["behind"] == 0
        incremental = live.dump()
        for row in incremental["baton_tasks"]:  # and the views tell the truth
            assert live.task(row["task_id"]) == app.task_view(row["task_id"])
            assert live.history(row["task_id"])["events"] == app.history(row["task_id"])

        fresh.rebuild()  # another instance, other batch and cache sizes, same tables
        assert live.dump() == incremental
        assert live.catch_up() == 0
    finally:
        fresh.close()
        live.close()
        app.close()


@contextmanager
def sqlite_store() -> Iterator[Callable[[], BatonApp]]:
    with tempfile.TemporaryDirectory() as directory:
        settings_ = Settings(data_dir=Path(directory))
        yield lambda: BatonApp(event_store_env(settings_), clock=Clock())


@contextmanager
def postgres_store(url: str) -> Iterator[Callable[[], BatonApp]]:
    settings_ = Settings(data_dir=Path("."), postgres_url=url, postgres_schema=new_schema(url))
    yield lambda: BatonApp(event_store_env(settings_), clock=Clock())


#: A few tasks first, then anything (including more tasks).
programs = st.builds(
    lambda first, rest: first + rest,
    st.lists(creates, min_size=1, max_size=3),
    st.lists(operations, max_size=30),
)


def examples(share: float) -> int:
    """A share of the active profile's examples (ci: 60), so the soak profile scales up."""
    return max(5, int(settings.default.max_examples * share))


LAW = given(
    ops=programs,
    batch_size=st.integers(1, 6),
    cache=st.integers(1, 3),
)


@LAW
@settings(max_examples=examples(0.5), deadline=None)
def test_incremental_views_equal_a_rebuild_from_zero_on_sqlite(
    ops: list[tuple[Any, ...]], batch_size: int, cache: int
) -> None:
    with sqlite_store() as open_app:
        check_incremental_equals_rebuild(open_app, ops, batch_size, cache)


@pytest.mark.postgres
@LAW
@settings(
    max_examples=examples(0.25),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # a fresh schema per example
)
def test_incremental_views_equal_a_rebuild_from_zero_on_postgres(
    postgres_db: dict[str, Any], ops: list[tuple[Any, ...]], batch_size: int, cache: int
) -> None:
    with postgres_store(postgres_db["url"]) as open_app:
        check_incremental_equals_rebuild(open_app, ops, batch_size, cache)
