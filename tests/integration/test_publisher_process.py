"""The publisher process (``BATON_PUBLISHER_PROCESS``): the views' catch-up, the progress relay
and the trigger scheduler run beside the service in a process of their own, and everything the
service promises still holds: progress published once and in order, triggers published, queries
reading their own writes, a publisher killed mid-stream restarted without a message lost or
doubled, nothing left unpublished when the service stops."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.nats_support import Running, running_baton, settings_for, wait_for
from tests.integration.test_publication_progress import published_by_task
from tests.plans import seq


@pytest.fixture
async def split(nats_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = settings_for(nats_url, tmp_path / "data", publisher_process=True)
    async with running_baton(settings) as running:
        yield running


def _publisher_pid(running: Running) -> int:
    process = running.baton.publisher_process
    assert process is not None and process.pid is not None
    return process.pid


async def _drive(running: Running, tasks: int, tag: str) -> list[str]:
    """Tasks created, started and walked to completion through the service."""
    client = running.client
    task_ids = []
    for i in range(tasks):
        view = await client.create_task(task_name=f"{tag} {i}", plan=seq("a", "b", "c"))
        task_ids.append(view["task_id"])
        await client.start_task(task_id=view["task_id"])
        while (await client.next_step(task_id=view["task_id"]))["status"] != "completed":
            pass
    return task_ids


async def _all_published(running: Running, task_ids: list[str]) -> dict[str, list[Any]]:
    """Waits until every event of ``task_ids`` is on the progress stream; returns them."""
    js = running.nc.jetstream()
    expected = {t: len(running.app.history(t)) for t in task_ids}

    async def complete() -> bool:
        by_task = await published_by_task(js, running.prefix)
        return all(len(by_task.get(t, [])) >= n for t, n in expected.items())

    await wait_for(complete, timeout=20)
    return await published_by_task(js, running.prefix)


def _assert_once_in_order(
    running: Running, by_task: dict[str, list[Any]], task_ids: list[str]
) -> None:
    for task_id in task_ids:
        history = running.app.history(task_id)
        bodies = [json.loads(m.data) for m in by_task[task_id]]
        assert [b["version"] for b in bodies] == [h["version"] for h in history]
        assert bodies == json.loads(json.dumps(history))
        msg_ids = [m.headers["Nats-Msg-Id"] for m in by_task[task_id]]
        assert len(set(msg_ids)) == len(msg_ids)


async def test_progress_and_triggers_leave_from_the_publisher_process(split: Running) -> None:
    assert split.baton.relay is None  # nothing of it runs in the service's process
    assert _publisher_pid(split) != os.getpid()
    triggers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_trigger(msg: Any) -> None:
        await triggers.put(json.loads(msg.data))

    await split.nc.subscribe(f"{split.prefix}.trigger.pp", cb=on_trigger)
    view = await split.client.create_task(task_name="t", plan=seq("a", "b"), session_id="pp")
    started = await split.client.start_task(task_id=view["task_id"])
    # A query right after a command reads that command's write (the service catches up).
    assert (await split.client.task(task_id=view["task_id"]))["current_step"]["step_name"] == "a"
    trigger = await asyncio.wait_for(triggers.get(), 10)
    assert trigger["trigger_id"] == started["trigger"]["trigger_id"]
    task_ids = [view["task_id"], *await _drive(split, 3, "more")]
    _assert_once_in_order(split, await _all_published(split, task_ids), task_ids)


async def test_a_killed_publisher_process_is_restarted_and_nothing_is_lost_or_doubled(
    split: Running,
) -> None:
    first = _publisher_pid(split)
    driving = asyncio.create_task(_drive(split, 12, "load"))
    await asyncio.sleep(0.3)
    os.kill(first, signal.SIGKILL)  # mid-stream: acked events whose position is not recorded
    task_ids = await driving

    async def restarted() -> bool:
        process = split.baton.publisher_process
        return process is not None and process.restarts >= 1 and process.pid != first

    await wait_for(restarted, timeout=15)
    by_task = await _all_published(split, task_ids)
    _assert_once_in_order(split, by_task, task_ids)


async def test_stopping_the_service_publishes_what_it_stored_and_ends_the_publisher(
    nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(nats_url, tmp_path / "data", publisher_process=True)
    async with running_baton(settings) as running:
        pid = _publisher_pid(running)
        task_ids = await _drive(running, 3, "last")
        expected = {t: len(running.app.history(t)) for t in task_ids}
        await running.baton.close()  # the service stops; its client and the stream stay
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        by_task = await published_by_task(running.nc.jetstream(), running.prefix)
        assert {t: len(by_task[t]) for t in task_ids} == expected


async def test_a_frozen_publisher_does_not_hold_up_the_replies(split: Running) -> None:
    pid = _publisher_pid(split)
    os.kill(pid, signal.SIGSTOP)  # hung, not dead: the supervisor sees nothing wrong
    try:
        task_ids = await asyncio.wait_for(_drive(split, 10, "frozen"), 30)
        # Every command was answered; the views (queries catch up themselves) agree.
        for task_id in task_ids:
            assert (await split.client.task(task_id=task_id))["status"] == "completed"
    finally:
        os.kill(pid, signal.SIGCONT)
    _assert_once_in_order(split, await _all_published(split, task_ids), task_ids)
