"""Baton run the way `make run` runs it: a separate process (`python -m baton.adapters`),
configured by the environment, driven through the typed client, stopped by signals, and killed
mid-run."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonClient, BatonUnavailable
from baton.adapters.natsserver import EmbeddedNatsServer, free_port, nats_answers
from baton.adapters.publication import stream_names
from tests.integration.nats_support import new_prefix
from tests.plans import seq
from tests.processes import (
    ServiceProcess,
    around_traceback,
    children_of,
    process_alive,
    stream_messages,
    wait_for_stream,
)


@pytest.fixture
def baton_process(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(nats_url, tmp_path / "data", new_prefix())
    try:
        yield process
    finally:
        process.kill()


# -- as `make run` starts it ----------------------------------------------------------------


async def test_a_task_runs_to_completion_and_sigterm_stops_the_service_cleanly(
    baton_process: ServiceProcess, nats_url: str
) -> None:
    await asyncio.to_thread(baton_process.start)
    prefix = baton_process.prefix
    async with await BatonClient.connect(nats_url, prefix=prefix) as client:
        task = await client.create_task(task_name="e2e", plan=seq("a", "b"))
        started = await client.start_task(task_id=task["task_id"])
        # Due now: published on the command's wake-up; wait for it before the next command
        # replaces it (how soon is tests/integration/test_publication_triggers.py's, on a clock).
        await wait_for_stream(nats_url, stream_names(prefix)[1], 1, timeout=15)
        assert (await client.next_step(task_id=task["task_id"]))["status"] == "queued"
        assert (await client.next_step(task_id=task["task_id"]))["status"] == "completed"
        history = await client.history(task_id=task["task_id"])
    events = history["events"]
    progress_stream, trigger_stream = stream_names(prefix)
    await wait_for_stream(nats_url, progress_stream, len(events))
    progress = await stream_messages(nats_url, progress_stream)
    assert [body["version"] for body, _ in progress] == [e["version"] for e in events]
    assert [body["type"] for body, _ in progress] == [e["type"] for e in events]
    assert all(body["task_id"] == task["task_id"] for body, _ in progress)
    triggers = await stream_messages(nats_url, trigger_stream)
    assert triggers[0][0]["trigger_id"] == started["trigger"]["trigger_id"]
    # The message id is the trigger id keyed by the deployment's secret (not computable).
    assert triggers[0][1].startswith(f"{started['trigger']['trigger_id']}:")
    assert triggers[0][0]["step_id"] == started["step"]["step_id"]

    baton_process.signal(signal.SIGTERM)
    assert await asyncio.to_thread(baton_process.wait) == 0
    log = baton_process.log()
    assert "listening on" in log and "using store" in log
    assert "received SIGTERM" in log and "baton: stopped" in log
    assert "Traceback" not in log, around_traceback(log)


async def test_an_embedded_nats_server_starts_when_none_answers(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    process = ServiceProcess(url, tmp_path / "data", "baton")
    try:
        await asyncio.to_thread(process.start)
        assert "started an embedded nats-server" in process.log()
        assert (tmp_path / "data" / "nats").is_dir()
        async with await BatonClient.connect(url) as client:
            task = await client.create_task(task_name="embedded", plan=seq("a"))
            assert (await client.next_step(task_id=task["task_id"]))["status"] == "completed"
        process.signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait) == 0
        assert not nats_answers(url, timeout=0.5)
    finally:
        process.kill()


# -- killed mid-run --------------------------------------------------------------------------

TASKS = 12
STEPS = ("a", "b", "c")


def lifecycle(i: int) -> list[tuple[str, dict[str, Any], str]]:
    """The commands of task ``i``, each (client method, arguments, msg id); the task id is filled
    in once the create is acknowledged."""
    commands: list[tuple[str, dict[str, Any], str]] = [
        (
            "create_task",
            {"task_name": f"job {i}", "session_id": f"job-{i}", "plan": seq(*STEPS)},
            f"create-{i}",
        ),
        ("start_task", {}, f"start-{i}"),
        ("add_context", {"key": "i", "value": i}, f"ctx-{i}"),
    ]
    commands += [("next_step", {}, f"next-{i}-{n}") for n in range(len(STEPS))]
    return commands


class Driver:
    """Runs lifecycles with msg ids, retrying each command until it is acknowledged."""

    def __init__(self, client: BatonClient) -> None:
        self.client = client
        self.acked: dict[str, tuple[str, dict[str, Any], Any]] = {}
        self.unavailable = 0

    async def send(self, method: str, args: dict[str, Any], msg_id: str) -> Any:
        while True:
            try:
                reply = await getattr(self.client, method)(**args, msg_id=msg_id)
            except BatonUnavailable:
                self.unavailable += 1
                await asyncio.sleep(0.05)
                continue
            self.acked[msg_id] = (method, args, reply)
            return reply

    async def run(self, i: int) -> str:
        task_id = ""
        for method, args, msg_id in lifecycle(i):
            if task_id:
                args = {**args, "task_id": task_id}
            reply = await self.send(method, args, msg_id)
            task_id = task_id or reply["task_id"]
        return task_id


async def test_sigkill_mid_run_then_restart_applies_every_acknowledged_command_once(
    baton_process: ServiceProcess, nats_url: str
) -> None:
    await asyncio.to_thread(baton_process.start)
    prefix = baton_process.prefix
    # No retries inside the client: the driver retries, and counts what met the dead service.
    async with await BatonClient.connect(nats_url, prefix=prefix, timeout=2, retries=0) as client:
        driver = Driver(client)
        work = asyncio.gather(*(driver.run(i) for i in range(TASKS)))
        deadline = time.monotonic() + 20
        while len(driver.acked) < TASKS * 2:
            assert time.monotonic() < deadline, "no progress before the kill"
            await asyncio.sleep(0.005)
        baton_process.signal(signal.SIGKILL)
        assert await asyncio.to_thread(baton_process.wait) == -signal.SIGKILL
        acked_before_kill = len(driver.acked)
        assert acked_before_kill < TASKS * len(lifecycle(0)), "the kill came too late"
        await asyncio.to_thread(baton_process.start)
        task_ids = await asyncio.wait_for(work, 60)
        assert driver.unavailable > 0, "no command met the dead service"

        # Every task ran its whole lifecycle exactly once: the same events, in the same order.
        histories = [(await client.history(task_id=t))["events"] for t in task_ids]
        for task_id, events in zip(task_ids, histories, strict=True):
            view = await client.task(task_id=task_id)
            assert view["status"] == "completed"
            assert view["context"]["i"] == int(task_id.split("-")[1])
            assert [e["version"] for e in events] == list(range(1, view["version"] + 1))
        shapes = {tuple(e["type"] for e in events) for events in histories}
        assert len(shapes) == 1, shapes
        assert [e["type"] for e in histories[0]].count("StepCompleted") == len(STEPS)

        # Re-sending any acknowledged command gets its first reply and changes nothing.
        versions = {t: (await client.task(task_id=t))["version"] for t in task_ids}
        for msg_id, (method, args, reply) in driver.acked.items():
            assert await getattr(client, method)(**args, msg_id=msg_id) == reply, msg_id
        assert {t: (await client.task(task_id=t))["version"] for t in task_ids} == versions

    # Every event was published once, in order, across the crash.
    progress_stream, trigger_stream = stream_names(prefix)
    total = sum(len(events) for events in histories)
    await wait_for_stream(nats_url, progress_stream, total)
    progress = await stream_messages(nats_url, progress_stream)
    assert len(progress) == total
    assert len({msg_id for _, msg_id in progress}) == total
    for task_id, events in zip(task_ids, histories, strict=True):
        published = [body for body, _ in progress if body["task_id"] == task_id]
        assert [(b["version"], b["type"]) for b in published] == [
            (e["version"], e["type"]) for e in events
        ]
    triggers = await stream_messages(nats_url, trigger_stream)
    trigger_ids = [body["trigger_id"] for body, _ in triggers]
    assert len(trigger_ids) == len(set(trigger_ids))
    assert len({msg_id for _, msg_id in triggers}) == len(trigger_ids)

    baton_process.signal(signal.SIGTERM)
    assert await asyncio.to_thread(baton_process.wait) == 0


async def test_the_publisher_process_goes_with_a_killed_service_and_comes_back_with_it(
    baton_process: ServiceProcess, nats_url: str
) -> None:
    await asyncio.to_thread(baton_process.start)
    assert baton_process.process is not None
    service = baton_process.process.pid
    publishers = children_of(service)
    assert len(publishers) == 1, publishers  # baton serve runs its publisher beside it
    prefix = baton_process.prefix
    progress_stream = stream_names(prefix)[0]
    async with await BatonClient.connect(nats_url, prefix=prefix, timeout=5) as client:
        first = await client.create_task(task_name="before", plan=seq("a"))
        await wait_for_stream(nats_url, progress_stream, 1)
        baton_process.signal(signal.SIGKILL)
        # Its pipe from the service closed: it stops by itself (wait() fails if it does not).
        await asyncio.to_thread(baton_process.wait)
        assert not process_alive(publishers[0])
        await asyncio.to_thread(baton_process.start)
        second = await client.create_task(task_name="after", plan=seq("a"))
        versions = {
            t["task_id"]: [
                e["version"] for e in (await client.history(task_id=t["task_id"]))["events"]
            ]
            for t in (first, second)
        }
        await wait_for_stream(nats_url, progress_stream, sum(map(len, versions.values())))
    published: dict[str, list[int]] = {}
    for body, _ in await stream_messages(nats_url, progress_stream):
        published.setdefault(body["task_id"], []).append(body["version"])
    assert published == versions  # each event once, in order, nothing lost


async def test_the_publisher_exits_when_its_service_and_nats_server_are_both_gone(
    tmp_path: Path,
) -> None:
    server = EmbeddedNatsServer(tmp_path / "js", port=free_port()).start()
    process = ServiceProcess(server.url, tmp_path / "data", new_prefix())
    try:
        await asyncio.to_thread(process.start)
        assert process.process is not None
        publishers = children_of(process.process.pid)
        assert len(publishers) == 1, publishers
        server.stop()  # the publisher is left reconnecting to a server that is not coming back
        started = time.monotonic()
        # Its drain cannot finish; it must exit anyway (sigkill() fails if it outlives 15 s).
        await asyncio.to_thread(process.sigkill)
        assert not process_alive(publishers[0])
        assert time.monotonic() - started < 15
    finally:
        process.kill()
        server.stop()
