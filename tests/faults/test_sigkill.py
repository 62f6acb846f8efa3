"""The service SIGKILLed at random moments under sustained mixed load, restarted on the same data
dir each time: every acknowledged command applied exactly once, nothing unacknowledged
half-applied, the views equal a rebuild from zero, every event published once and in order,
every due trigger published once. ``make soak`` kills it many more times."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from baton.adapters.client import BatonClient, BatonRequestError, BatonUnavailable
from tests.faults.support import (
    SEQ_PLAN,
    SOAK,
    Load,
    ServiceProcess,
    check_everything,
    check_views_equal_a_rebuild,
    emit,
    new_prefix,
    retrying,
)

KILLS = 25 if SOAK else 3
WORKERS = 12
ABANDONED = 10  # creates sent right before each kill and never retried


async def abandon_creates(client: BatonClient, first: int, count: int) -> set[str]:
    """Sends creates without retrying them (the service is about to die): the msg ids acked."""

    async def one(k: int) -> str | None:
        try:
            await client.request(
                "task.create",
                {"task_name": f"abandoned {k}", "session_id": f"abandoned-{k}", "plan": SEQ_PLAN},
                msg_id=f"abandoned-{k}",
                timeout=1.0,
            )
        except BatonUnavailable:
            return None
        return f"abandoned-{k}"

    acked = await asyncio.gather(*(one(k) for k in range(first, first + count)))
    return {a for a in acked if a}


async def check_abandoned(load: Load, count: int, acked: set[str]) -> int:
    """A create that was never acknowledged made a whole task or nothing; its repeat makes
    exactly one (added to the load's tasks, kind ``created``). Returns how many had been applied
    without an acknowledgement."""
    client = load.client
    applied_silently = 0
    for k in range(count):
        session = f"abandoned-{k}"
        found = (await client.tasks(session_id=session))["tasks"]
        assert len(found) <= 1, found
        if f"abandoned-{k}" in acked:
            assert len(found) == 1, session
        if found:
            view = await client.task(task_id=found[0]["task_id"])
            assert view["status"] == "running"
            assert [s["step_name"] for s in view["steps"]] == ["a", "b", "c"]
            assert [s["status"] for s in view["steps"]] == ["current", "pending", "pending"]
            events = (await client.history(task_id=view["task_id"]))["events"]
            assert [e["version"] for e in events] == list(range(1, view["version"] + 1))
            applied_silently += f"abandoned-{k}" not in acked
        again = await client.request(
            "task.create",
            {"task_name": f"abandoned {k}", "session_id": session, "plan": SEQ_PLAN},
            msg_id=f"abandoned-{k}",
        )
        if found:
            assert again["task_id"] == found[0]["task_id"]
        after = (await client.tasks(session_id=session))["tasks"]
        assert [t["task_id"] for t in after] == [again["task_id"]]
        load.tasks[again["task_id"]] = "created"
    return applied_silently


async def test_sigkill_under_mixed_load_loses_nothing_and_duplicates_nothing(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random()
    service = ServiceProcess(nats_url, tmp_path / "data", new_prefix())
    await asyncio.to_thread(service.start)
    abandoned_acked: set[str] = set()
    abandoned = 0
    try:
        async with await BatonClient.connect(nats_url, prefix=service.prefix, timeout=2) as client:
            load = Load(client)
            running = asyncio.create_task(load.run(WORKERS))
            try:
                for kill in range(KILLS):
                    # Let the load build up, then kill at a random moment.
                    await load.wait_acked(len(load.acked) + rng.randint(100, 300))
                    burst = asyncio.create_task(abandon_creates(client, abandoned, ABANDONED))
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    await asyncio.to_thread(service.sigkill)
                    abandoned_acked |= await burst
                    abandoned += ABANDONED
                    await asyncio.sleep(rng.uniform(0, 0.3))
                    await asyncio.to_thread(service.start)
                    assert kill + 1 == service.kills
                await load.wait_acked(len(load.acked) + 50)
            finally:
                load.stop.set()
                await asyncio.wait_for(running, 120)
            assert load.unavailable > 0, "no command met a dead service"
            assert not load.errors, load.errors

            silently = await check_abandoned(load, abandoned, abandoned_acked)
            figures, _ = await check_everything(load, nats_url, service.prefix, service.settings())
            with pytest.raises(BatonRequestError) as unknown:
                await retrying(lambda: client.task(task_id="never-created"))
            assert unknown.value.code == 404
        assert await asyncio.to_thread(service.terminate) == 0
        compared = await asyncio.to_thread(check_views_equal_a_rebuild, service.settings())
        assert compared == figures.tasks
    finally:
        service.kill()
    emit(
        capsys,
        f"sigkill: {service.kills} kills survived; {figures.commands_acked} acknowledged commands "
        f"re-sent and checked over {figures.tasks} tasks ({figures.events} events, each published "
        f"once in order); {figures.triggers_published} triggers published once; "
        f"{abandoned} creates sent as the service died whole or absent "
        f"({abandoned - len(abandoned_acked)} unacknowledged, {silently} of them applied); "
        f"{load.unavailable} requests met a dead service",
    )
