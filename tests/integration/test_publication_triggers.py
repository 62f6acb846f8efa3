"""Triggers on JetStream: each published when its fire_at comes (on a clock the test moves),
never before, never when withdrawn or replaced, and exactly once across restarts of the
scheduler; on SQLite and on PostgreSQL, with the real projections.

Each test publishes under its own subject prefix, hence into its own stream
(``BATON_TRIGGERS_<PREFIX>``) on the shared nats-server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.config import Settings, event_store_env
from baton.adapters.publication import TriggerScheduler, stream_names
from baton.domain import commands as c
from baton.domain.services import BatonApp
from baton.projections import Projections
from tests.plans import seq

PLAN = seq("a", "b")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_side(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], tuple[BatonApp, Projections]]]:
    """Makes (app, projections) pairs on one store: a second pair is the service restarted."""
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_db")
        settings = Settings(postgres_url=db["url"])
    else:
        settings = Settings(data_dir=tmp_path / "data")
    made: list[tuple[BatonApp, Projections]] = []

    def make() -> tuple[BatonApp, Projections]:
        app = BatonApp(env=event_store_env(settings))
        projections = Projections(app)
        app.ready_work = projections
        made.append((app, projections))
        return app, projections

    yield make
    for app, projections in made:
        projections.close()
        app.close()


class Running:
    """A scheduler running in the background, stopped on exit."""

    def __init__(self, scheduler: TriggerScheduler) -> None:
        self.scheduler = scheduler
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TriggerScheduler:
        self.task = asyncio.create_task(self.scheduler.run(self.stop))
        return self.scheduler

    async def __aexit__(self, *exc: Any) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task


def new_task(app: BatonApp, session: str) -> str:
    view = app.handle(c.CreateTask(task_name="job", session_id=session, plan=PLAN))  # type: ignore[arg-type]
    return str(view["task_id"])


async def triggers_in_stream(js: Any, prefix: str) -> list[tuple[dict[str, Any], str]]:
    stream = stream_names(prefix)[1]
    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return []
    out = []
    for number in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, number)
        out.append((json.loads(msg.data), msg.headers["Nats-Msg-Id"]))
    return out


async def wait_until_published(js: Any, prefix: str, count: int, timeout: float = 10) -> None:
    """Waits until the stream holds ``count`` triggers (``timeout`` only ends a broken test)."""
    deadline = time.monotonic() + timeout
    while len(await triggers_in_stream(js, prefix)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} triggers after {timeout} s"
        await asyncio.sleep(0.02)


class Clock:
    """A clock the test moves by hand: the scheduler sees the time the test says it is."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_trigger_due_now_is_published_on_the_wake_up_of_its_command(
    make_side: Callable[[], tuple[BatonApp, Projections]], js: Any, prefix: str
) -> None:
    app, projections = make_side()
    task_id = new_task(app, "s-now")
    async with Running(TriggerScheduler(projections, js, prefix=prefix)) as scheduler:
        reply = await asyncio.to_thread(app.handle, c.StartTask(task_id=task_id))
        scheduler.wake()
        await wait_until_published(js, prefix, 1)
    trigger = reply["trigger"]
    assert await triggers_in_stream(js, prefix) == [(trigger, trigger["trigger_id"])]
    assert trigger["session_id"] == "s-now"
    msg = await js.get_last_msg(stream_names(prefix)[1], f"{prefix}.trigger.s-now")
    assert msg.seq == 1


async def test_a_delayed_trigger_is_published_at_its_fire_at_and_not_before(
    make_side: Callable[[], tuple[BatonApp, Projections]], js: Any, prefix: str
) -> None:
    app, projections = make_side()
    task_id = new_task(app, "s-later")
    clock = Clock()
    scheduler = TriggerScheduler(projections, js, prefix=prefix, clock=clock)
    fire_at = app.handle(c.StartTask(task_id=task_id, delay_s=30))["trigger"]["fire_at"]
    clock.now = fire_at - 0.001
    assert await scheduler.pump_once() == 0
    assert await triggers_in_stream(js, prefix) == []
    # A scheduler with nothing due naps no longer than until the fire_at (nor than max_sleep).
    clock.now = fire_at - 0.1
    assert 0 < await scheduler._idle_timeout() <= 0.1
    clock.now = fire_at - 3600
    assert await scheduler._idle_timeout() == scheduler.max_sleep <= 1.0
    clock.now = fire_at
    assert await scheduler.pump_once() == 1
    assert [body["fire_at"] for body, _ in await triggers_in_stream(js, prefix)] == [fire_at]


async def test_withdrawn_and_replaced_triggers_are_never_published(
    make_side: Callable[[], tuple[BatonApp, Projections]], js: Any, prefix: str
) -> None:
    app, projections = make_side()
    cancelled, restarted = new_task(app, "s-cancel"), new_task(app, "s-replace")
    clock = Clock()
    scheduler = TriggerScheduler(projections, js, prefix=prefix, clock=clock)
    first = app.handle(c.StartTask(task_id=cancelled, delay_s=0.8))["trigger"]
    app.handle(c.CancelTask(task_id=cancelled, reason="changed my mind"))
    replaced = app.handle(c.StartTask(task_id=restarted, delay_s=0.8))["trigger"]
    newer = app.handle(c.StartTask(task_id=restarted, delay_s=1.0))["trigger"]
    clock.now = newer["fire_at"] + 3600  # every trigger ever made is due
    assert await scheduler.pump_once() == 1
    assert await scheduler.pump_once() == 0
    published = await triggers_in_stream(js, prefix)
    assert [msg_id for _, msg_id in published] == [newer["trigger_id"]]
    assert first["trigger_id"] != replaced["trigger_id"]


async def test_a_restarted_scheduler_neither_repeats_nor_loses_triggers(
    make_side: Callable[[], tuple[BatonApp, Projections]], js: Any, prefix: str
) -> None:
    class CrashBeforeMarking(TriggerScheduler):
        def _mark(self, trigger_ids: list[str]) -> None:
            raise RuntimeError("power cut")

    app, projections = make_side()
    one, two, three = (new_task(app, f"s-{n}") for n in ("one", "two", "three"))
    app.handle(c.StartTask(task_id=one))
    first = TriggerScheduler(projections, js, prefix=prefix)
    assert await first.pump_once() == 1

    # The service stops; meanwhile a second trigger becomes due.
    app.handle(c.StartTask(task_id=two))
    crashing = CrashBeforeMarking(projections, js, prefix=prefix)
    with pytest.raises(RuntimeError, match="power cut"):
        await crashing.pump_once()  # published, never marked
    app.handle(c.StartTask(task_id=three))

    app2, projections2 = make_side()
    restarted = TriggerScheduler(projections2, js, prefix=prefix)
    assert await restarted.pump_once() == 2  # "two" again (a duplicate) and "three"
    assert (restarted.published, restarted.duplicates) == (1, 1)
    assert await restarted.pump_once() == 0
    published = await triggers_in_stream(js, prefix)
    sessions = [body["session_id"] for body, _ in published]
    assert sessions == ["s-one", "s-two", "s-three"]
