"""Scale-out: three Baton instances on one PostgreSQL database, in one queue group, under load,
one of them SIGKILLed midway. The outcome (each task's view, status and sequence of event types)
equals a single-instance run of the same command script."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonClient
from tests.faults.support import KINDS, SOAK, Load, ServiceProcess, emit, new_prefix
from tests.processes import around_traceback

TASKS_PER_KIND = 60 if SOAK else 12
VOLATILE = {
    "task_id",
    "step_id",
    "workspace",
    "created_at",
    "updated_at",
    "fire_at",
    "trigger_id",
    "parent_action_id",
    "timestamp",
}


def canonical(value: Any, task_id: str) -> Any:
    """``value`` without ids, times and random parts."""
    if isinstance(value, dict):
        return {k: canonical(v, task_id) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [canonical(v, task_id) for v in value]
    if isinstance(value, str):
        return value.replace(task_id, "<task>")
    return value


async def drive(client: BatonClient, tag: str, on_progress: Any = None) -> dict[str, Any]:
    """Runs the script (every kind, TASKS_PER_KIND tasks each, concurrently); returns each
    task's canonical outcome by task name."""
    load = Load(client, tag=tag)
    runs = [load.run_script(kind, n) for kind in KINDS for n in range(TASKS_PER_KIND)]
    work = asyncio.gather(*runs)
    if on_progress is not None:
        await on_progress(load)
    task_ids = await asyncio.wait_for(work, 180)
    outcome: dict[str, Any] = {}
    for task_id in task_ids:
        view = await client.task(task_id=task_id)
        events = (await client.history(task_id=task_id))["events"]
        assert [e["version"] for e in events] == list(range(1, view["version"] + 1))
        outcome[view["task_name"]] = {
            "view": canonical(view, task_id),
            "events": [e["type"] for e in events],
        }
    return {"outcome": outcome, "acked": len(load.acked), "unavailable": load.unavailable}


@pytest.mark.postgres
async def test_three_instances_with_one_killed_end_as_a_single_instance_does(
    nats_url: str, tmp_path: Path, postgres_db: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = new_prefix()
    env = {"BATON_POSTGRES_URL": postgres_db["url"]}
    instances = [
        ServiceProcess(nats_url, tmp_path / f"i{i}" / "data", prefix, env=env, name=f"i{i}")
        for i in range(3)
    ]
    single = ServiceProcess(nats_url, tmp_path / "single" / "data", new_prefix(), name="single")
    try:
        # All at once on an empty database: they create the schema in turn, and none dies.
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in [*instances, single]))

        async def kill_one_midway(load: Load) -> None:
            await load.wait_acked(TASKS_PER_KIND * len(KINDS) * 2)
            await asyncio.to_thread(instances[1].sigkill)

        async with await BatonClient.connect(nats_url, prefix=prefix, timeout=3) as client:
            scaled = await drive(client, "run", kill_one_midway)
        async with await BatonClient.connect(nats_url, prefix=single.prefix, timeout=10) as client:
            alone = await drive(client, "run")

        assert instances[1].kills == 1
        assert instances[0].alive and instances[2].alive
        assert scaled["acked"] == alone["acked"]
        assert scaled["outcome"].keys() == alone["outcome"].keys()
        for name, expected in alone["outcome"].items():
            assert scaled["outcome"][name] == expected, name
        logs = [s.all_logs() for s in instances]
        served = [log.count("Traceback") for log in logs]
        assert served == [0, 0, 0], "\n\n".join(
            around_traceback(log) for log in logs if "Traceback" in log
        )
    finally:
        for service in [*instances, single]:
            service.kill()
    emit(
        capsys,
        f"scale-out: 3 instances on PostgreSQL, 1 SIGKILLed midway; {scaled['acked']} commands "
        f"over {len(alone['outcome'])} tasks end exactly as on one instance "
        f"({scaled['unavailable']} requests met the killed instance and were re-sent)",
    )
