"""`baton status` against two running instances (processes, as `make run` starts them) on one
PostgreSQL database: both are listed with their counts, projection lag and backlogs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonClient, BatonRequestError
from baton.adapters.natsserver import free_port
from tests.integration.nats_support import new_prefix
from tests.plans import seq
from tests.processes import ServiceProcess

BATON = Path(sys.executable).parent / "baton"


def baton_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BATON), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.postgres
async def test_status_lists_every_instance_with_its_lag_and_backlogs(
    nats_url: str, tmp_path: Path, postgres_db: dict[str, Any]
) -> None:
    prefix = new_prefix()
    env = {"BATON_POSTGRES_URL": postgres_db["url"]}
    instances = [
        ServiceProcess(nats_url, tmp_path / f"i{i}" / "data", prefix, env=env, name=f"i{i}")
        for i in range(2)
    ]
    for instance in instances:
        instance.start()
    try:
        async with await BatonClient.connect(nats_url, prefix=prefix, timeout=10) as client:
            for n in range(20):
                view = await client.create_task(task_name=f"t{n}", plan=seq("a", "b"))
                await client.start_task(task_id=view["task_id"], delay_s=3600)
            for _ in range(4):
                with pytest.raises(BatonRequestError):
                    await client.start_task(task_id="no-such-task")
        await asyncio.sleep(1.5)  # one sample of the figures after the load

        dead = f"nats://127.0.0.1:{free_port('127.0.0.1')}"  # a cluster node that is down
        done = await asyncio.to_thread(
            baton_cli, "status", "--json", "--nats", f"{dead},{nats_url}", "--prefix", prefix
        )
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
        assert len(listed) == 2
        assert {i["prefix"] for i in listed} == {prefix}
        assert sum(i["requests"] for i in listed) == 44  # the queue group shared them
        assert sum(i["errors"] for i in listed) == 4
        for instance in listed:
            figures = instance["figures"]
            assert isinstance(figures["projection_lag"], int), figures
            assert isinstance(figures["relay_backlog"], int), figures
            assert figures["due_triggers"] == 0  # every trigger fires in an hour
            assert figures["nats_server"] == nats_url.split("://")[1]
            assert sorted(instance["answered"]) == ["info", "stats"]

        text = await asyncio.to_thread(baton_cli, "status", "--nats", nats_url, "--prefix", prefix)
        assert text.returncode == 0, text.stderr
        header, *rows = text.stdout.split("\n\n")[0].splitlines()
        assert "LAG" in header and "RELAY BACKLOG" in header and "DUE TRIGGERS" in header
        assert sorted(row.split()[0] for row in rows) == sorted(i["id"] for i in listed)
        assert "errors by endpoint:" in text.stdout and "404:" in text.stdout
    finally:
        for instance in instances:
            if instance.alive:
                instance.terminate()


async def test_status_with_no_instance_says_so_and_fails(nats_url: str) -> None:
    done = await asyncio.to_thread(
        baton_cli, "status", "--nats", nats_url, "--prefix", new_prefix(), "--wait", "0.5"
    )
    assert done.returncode == 1
    assert "no Baton instance answered" in done.stdout
