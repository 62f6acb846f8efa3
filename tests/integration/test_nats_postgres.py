"""Baton over NATS with its events and views in PostgreSQL, alone and as two instances sharing
one database and the queue group."""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.bootstrap import Baton
from baton.adapters.client import BatonClient
from tests.integration.nats_support import running_baton, settings_for
from tests.plans import seq

pytestmark = pytest.mark.postgres


async def test_a_command_round_trip_on_postgres(
    nats_url: str, tmp_path: Path, postgres_db: dict[str, Any]
) -> None:
    settings = settings_for(nats_url, tmp_path / "data", postgres_url=postgres_db["url"])
    async with running_baton(settings) as baton:
        task = await baton.client.create_task(task_name="pg", plan=seq("a", "b"), msg_id="pg-1")
        again = await baton.client.create_task(task_name="pg", plan=seq("a", "b"), msg_id="pg-1")
        assert again == task
        await baton.client.start_task(task_id=task["task_id"])
        assert (await baton.client.next_step(task_id=task["task_id"]))["status"] == "queued"
        assert (await baton.client.next_step(task_id=task["task_id"]))["status"] == "completed"
        view = await baton.client.task(task_id=task["task_id"])
        assert view["status"] == "completed"
        history = await baton.client.history(task_id=task["task_id"])
        assert [e["version"] for e in history["events"]] == list(range(1, view["version"] + 1))
    assert not (tmp_path / "data" / "events.sqlite").exists()


async def _lifecycle(client: BatonClient, i: int) -> str:
    """One task from creation to completion, every command with a msg id."""
    task = await client.create_task(
        task_name=f"job {i}",
        session_id=f"pg-session-{i}",
        plan=seq("a", "b", "c"),
        msg_id=f"create-{i}",
    )
    task_id = task["task_id"]
    await client.start_task(task_id=task_id, msg_id=f"start-{i}")
    await client.add_context(task_id=task_id, key="n", value=i, msg_id=f"ctx-{i}")
    for n in range(3):
        await client.next_step(task_id=task_id, msg_id=f"next-{i}-{n}")
    return str(task_id)


async def _stats(client: BatonClient, prefix: str) -> list[dict[str, Any]]:
    inbox = client.nc.new_inbox()
    sub = await client.nc.subscribe(inbox)
    await client.nc.publish("$SRV.STATS.baton", b"", reply=inbox)
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            stats = json.loads(msg.data)
            if stats.get("metadata", {}).get("prefix") == prefix:
                found.append(stats)
    except TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return found


async def test_two_instances_on_one_database_share_the_load_and_stay_consistent(
    nats_url: str, tmp_path: Path, postgres_db: dict[str, Any]
) -> None:
    first = settings_for(nats_url, tmp_path / "one", postgres_url=postgres_db["url"])
    second = settings_for(
        nats_url,
        tmp_path / "two",
        postgres_url=postgres_db["url"],
        subject_prefix=first.subject_prefix,
    )
    async with AsyncExitStack() as stack:
        for settings in (first, second):
            baton = await Baton.start(settings)
            stack.push_async_callback(baton.close)
        client = await BatonClient.connect(nats_url, prefix=first.subject_prefix, timeout=30)
        stack.push_async_callback(client.close)

        task_ids = await asyncio.gather(*(_lifecycle(client, i) for i in range(20)))

        for task_id in task_ids:
            view = await client.task(task_id=task_id)
            assert view["status"] == "completed", view
            assert [s["status"] for s in view["steps"]] == ["completed"] * 3
            history = await client.history(task_id=task_id)
            versions = [e["version"] for e in history["events"]]
            assert versions == list(range(1, view["version"] + 1))
            assert [e["type"] for e in history["events"]].count("StepCompleted") == 3
        # Replaying every command changes nothing: each was applied exactly once.
        assert await asyncio.gather(*(_lifecycle(client, i) for i in range(20))) == task_ids
        listed = await client.tasks(status="completed", limit=1000)
        assert sorted(t["task_id"] for t in listed["tasks"]) == sorted(task_ids)
        stats = await _stats(client, first.subject_prefix)
        assert len(stats) == 2
        served = [sum(e["num_requests"] for e in s["endpoints"]) for s in stats]
        assert all(n > 0 for n in served), served
