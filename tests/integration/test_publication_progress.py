"""Task progress on JetStream: every event of a task exactly once, in order, through crashes of
the relay and restarts of NATS, on SQLite and on PostgreSQL.

Each test publishes under its own subject prefix, hence into its own stream
(``BATON_PROGRESS_<PREFIX>``) on the shared nats-server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from baton.adapters.config import Settings, event_store_env
from baton.adapters.natsserver import EmbeddedNatsServer
from baton.adapters.publication import (
    DUPLICATE_WINDOW_S,
    ProgressRelay,
    PublicationError,
    ensure_streams,
    stream_names,
)
from baton.domain import commands as c
from baton.domain import ids
from baton.domain.services import BatonApp
from tests.integration.nats_support import wait_for
from tests.plans import seq

PLAN = seq("a", "b", "c")

# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], BatonApp]]:
    """Makes BatonApps on one event store (a fresh SQLite file, or a fresh PostgreSQL database):
    a second one stands for the service restarted on the same data."""
    if request.param == "postgres":
        db = request.getfixturevalue("postgres_db")
        settings = Settings(postgres_url=db["url"])
    else:
        settings = Settings(data_dir=tmp_path / "data")
    apps: list[BatonApp] = []

    def make() -> BatonApp:
        app = BatonApp(env=event_store_env(settings))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


# -- helpers -------------------------------------------------------------------------------------


def drive(app: BatonApp, tasks: int = 2, session: str | None = None) -> list[str]:
    """Creates ``tasks`` tasks and walks each through its steps to completion."""
    task_ids = []
    for i in range(tasks):
        view = app.handle(
            c.CreateTask(
                task_name=f"job {i}",
                task_instruction="publish me",
                session_id=session,
                plan=PLAN,  # type: ignore[arg-type]
            )
        )
        task_ids.append(view["task_id"])
    for task_id in task_ids:
        app.handle(c.StartTask(task_id=task_id))
        app.handle(c.AddContext(task_id=task_id, key="k", value={"n": 1}))
        while app.handle(c.NextStep(task_id=task_id))["status"] != "completed":
            pass
    return task_ids


async def stream_messages(js: Any, stream: str) -> list[Any]:
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    if info.state.messages == 0:
        return []
    return [await js.get_msg(stream, seq) for seq in range(first, last + 1)]


async def published_by_task(js: Any, prefix: str) -> dict[str, list[Any]]:
    by_task: dict[str, list[Any]] = {}
    for msg in await stream_messages(js, stream_names(prefix)[0]):
        task_id = msg.subject.removeprefix(f"{prefix}.progress.")
        by_task.setdefault(task_id, []).append(msg)
    return by_task


def assert_exactly_once_in_order(
    app: BatonApp, task_ids: list[str], by_task: dict[str, list[Any]]
) -> None:
    assert sorted(by_task) == sorted(task_ids)
    for task_id in task_ids:
        history = app.history(task_id)
        messages = by_task[task_id]
        bodies = [json.loads(m.data) for m in messages]
        assert [b["version"] for b in bodies] == [h["version"] for h in history]
        assert bodies == json.loads(json.dumps(history))
        aggregate_id = ids.task_uuid(task_id)
        assert [m.headers["Nats-Msg-Id"] for m in messages] == [
            f"{aggregate_id}:{h['version']}" for h in history
        ]


async def pump_all(relay: ProgressRelay) -> int:
    total = 0
    while True:
        before = relay._position
        total += await relay.pump_once()
        if relay._position == before:
            return total


# -- streams -------------------------------------------------------------------------------------


def test_stream_names_carry_a_suffix_for_any_prefix_but_baton() -> None:
    assert stream_names() == ("BATON_PROGRESS", "BATON_TRIGGERS")
    assert stream_names("acme.baton") == ("BATON_PROGRESS_ACME_BATON", "BATON_TRIGGERS_ACME_BATON")


async def test_ensure_streams_creates_file_streams_apart_from_command_subjects(
    js: Any, prefix: str
) -> None:
    progress, triggers = stream_names(prefix)
    await ensure_streams(js, prefix)  # a second time: nothing to do
    p, t = (await js.stream_info(progress)).config, (await js.stream_info(triggers)).config
    assert p.subjects == [f"{prefix}.progress.>"]
    assert t.subjects == [f"{prefix}.trigger.>"]
    assert {getattr(x.storage, "value", x.storage) for x in (p, t)} == {"file"}
    assert p.duplicate_window == t.duplicate_window == DUPLICATE_WINDOW_S
    p.duplicate_window = 60.0
    p.max_msgs = 1_000_000
    await js.update_stream(config=p)
    await ensure_streams(js, prefix)
    repaired = (await js.stream_info(progress)).config
    assert repaired.duplicate_window == DUPLICATE_WINDOW_S
    assert repaired.max_msgs == 1_000_000  # an operator's limit is kept


# -- publication ---------------------------------------------------------------------------------


async def test_every_event_of_a_task_is_published_once_in_order(
    make_app: Callable[[], BatonApp], js: Any, prefix: str
) -> None:
    app = make_app()
    task_ids = drive(app, tasks=3, session="shared")
    relay = ProgressRelay(app, js, prefix=prefix, batch=7)
    published = await pump_all(relay)
    by_task = await published_by_task(js, prefix)
    assert_exactly_once_in_order(app, task_ids, by_task)
    assert published == relay.published == sum(len(app.history(t)) for t in task_ids)
    # Session and command events are skipped, but the position moves past them.
    assert relay.read_position() == app.recorder.max_notification_id()
    assert await relay.pump_once() == 0


async def test_a_relay_crash_before_recording_republishes_the_batch_as_duplicates(
    make_app: Callable[[], BatonApp], js: Any, prefix: str
) -> None:
    class CrashBeforeRecording(ProgressRelay):
        def save_position(self, notification_id: int) -> None:
            raise RuntimeError("power cut")

    app = make_app()
    task_ids = drive(app, tasks=2)
    first = ProgressRelay(app, js, prefix=prefix, batch=10)
    await first.pump_once()  # the first batch is published and recorded
    crashing = CrashBeforeRecording(app, js, prefix=prefix, batch=1000)
    with pytest.raises(RuntimeError, match="power cut"):
        await crashing.pump_once()
    assert crashing.published > 0  # the rest went out, but nothing recorded it

    restarted_app = make_app()
    restarted = ProgressRelay(restarted_app, js, prefix=prefix, batch=1000)
    assert restarted.read_position() == first.read_position()
    await pump_all(restarted)
    assert restarted.duplicates == crashing.published
    assert restarted.published == 0
    assert_exactly_once_in_order(app, task_ids, await published_by_task(js, prefix))


async def test_unacknowledged_events_are_never_skipped(
    make_app: Callable[[], BatonApp], js: Any, prefix: str
) -> None:
    class FlakyRelay(ProgressRelay):
        fail_on = 5

        async def _send(self, item: Any) -> Any:
            self.fail_on -= 1
            if self.fail_on == 0:
                raise nats.errors.TimeoutError
            return await super()._send(item)

    app = make_app()
    task_ids = drive(app, tasks=2)
    relay = FlakyRelay(app, js, prefix=prefix)
    with pytest.raises(PublicationError):
        await relay.pump_once()
    assert relay.read_position() == 0
    await pump_all(relay)
    assert relay.duplicates > 0
    assert_exactly_once_in_order(app, task_ids, await published_by_task(js, prefix))


async def test_a_progress_stream_deleted_under_the_relay_is_made_again_and_nothing_is_skipped(
    make_app: Callable[[], BatonApp], js: Any, prefix: str
) -> None:
    app = make_app()
    before = drive(app, tasks=1)
    relay = ProgressRelay(app, js, prefix=prefix, batch=1000)
    await pump_all(relay)
    await js.delete_stream(stream_names(prefix)[0])  # an operator's mistake, or a reset
    after = drive(app, tasks=2)
    # Nobody stores the subject now: the batch fails as a whole (no stream answered) and is
    # neither recorded nor skipped; the next pump makes the stream again and publishes it.
    position = relay.read_position()
    with pytest.raises(PublicationError):
        await relay.pump_once()
    assert relay.read_position() == position
    await pump_all(relay)
    assert_exactly_once_in_order(app, after, await published_by_task(js, prefix))
    assert before[0] not in await published_by_task(js, prefix)  # gone with the old stream


async def test_two_relays_on_one_store_publish_each_event_once(
    make_app: Callable[[], BatonApp], js: Any, prefix: str
) -> None:
    app = make_app()
    relays = [ProgressRelay(make_app(), js, prefix=prefix, batch=5) for _ in range(2)]
    stop = asyncio.Event()
    runs = [asyncio.create_task(r.run(stop)) for r in relays]
    task_ids = await asyncio.to_thread(drive, app, 4)
    for r in relays:
        r.wake()
    last = await asyncio.to_thread(app.recorder.max_notification_id)
    await wait_for(lambda: _positions_reach(relays, last), timeout=10)
    stop.set()
    await asyncio.gather(*runs)
    assert_exactly_once_in_order(app, task_ids, await published_by_task(js, prefix))
    assert sum(r.published for r in relays) == sum(len(app.history(t)) for t in task_ids)


async def _true(value: bool) -> bool:
    return value


async def _positions_reach(relays: list[ProgressRelay], last: int) -> bool:
    positions = await asyncio.gather(*(asyncio.to_thread(r.read_position) for r in relays))
    return min(positions) >= last


@pytest.mark.slow
async def test_publication_catches_up_after_nats_restarts(
    make_app: Callable[[], BatonApp], tmp_path: Path, prefix: str
) -> None:
    app = make_app()
    with EmbeddedNatsServer(tmp_path / "js") as server:
        nc = await nats.connect(
            server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, connect_timeout=1
        )
        try:
            js = nc.jetstream()
            await ensure_streams(js, prefix)
            relay = ProgressRelay(app, js, prefix=prefix, batch=20, publish_timeout=0.5)
            relay.max_backoff = 0.3
            stop = asyncio.Event()
            running = asyncio.create_task(relay.run(stop))
            before = await asyncio.to_thread(drive, app, 3)
            # Restart while the relay works, and make more events while NATS is down.
            await asyncio.to_thread(server.stop)
            during = await asyncio.to_thread(drive, app, 3)
            await wait_for(lambda: _true(relay.failures > 0), timeout=10)
            await asyncio.to_thread(server.start)
            after = await asyncio.to_thread(drive, app, 2)
            relay.wake()
            last = await asyncio.to_thread(app.recorder.max_notification_id)
            await wait_for(lambda: _positions_reach([relay], last), timeout=20)
            stop.set()
            await running
            by_task = await published_by_task(js, prefix)
            assert_exactly_once_in_order(app, before + during + after, by_task)
        finally:
            await nc.close()
