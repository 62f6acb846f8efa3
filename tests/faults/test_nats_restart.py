"""The NATS server restarted twice under sustained load: Baton reconnects, serves again and
publication catches up; every acknowledged command applied once, every event published once and
in order, every due trigger once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from baton.adapters.client import BatonClient
from baton.adapters.natsserver import EmbeddedNatsServer
from tests.faults.support import (
    Load,
    ServiceProcess,
    check_everything,
    check_views_equal_a_rebuild,
    emit,
    new_prefix,
)
from tests.processes import around_traceback

RESTARTS = 2
DOWNTIME_S = 1.5


async def quiet(error: Exception) -> None:
    """The client's connection errors while the server is down are expected."""


async def test_a_nats_restart_mid_load_loses_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with EmbeddedNatsServer(tmp_path / "js") as server:
        service = ServiceProcess(server.url, tmp_path / "data", new_prefix())
        await asyncio.to_thread(service.start)
        try:
            client = await BatonClient.connect(
                server.url,
                prefix=service.prefix,
                timeout=2,
                retries=0,  # the load re-sends, and counts what met the restart
                reconnect_time_wait=0.1,
                max_reconnect_attempts=-1,
                error_cb=quiet,
            )
            async with client:
                load = Load(client)
                running = asyncio.create_task(load.run(8))
                try:
                    for _ in range(RESTARTS):
                        await load.wait_acked(len(load.acked) + 150)
                        await asyncio.to_thread(server.stop)
                        await asyncio.sleep(DOWNTIME_S)  # requests meanwhile time out
                        await asyncio.to_thread(server.start)
                    acked_at_last_restart = len(load.acked)
                    # Served again after the restart: the load keeps being acknowledged.
                    await load.wait_acked(acked_at_last_restart + 150)
                finally:
                    load.stop.set()
                    await asyncio.wait_for(running, 120)
                assert load.unavailable > 0, "no command met the restart"
                assert not load.errors, load.errors
                figures, _ = await check_everything(
                    load, server.url, service.prefix, service.settings()
                )
            assert service.alive, "the service died with its NATS server"
            assert "NATS: reconnected" in service.log()
            assert await asyncio.to_thread(service.terminate) == 0
            log = service.log()
            assert "Traceback" not in log, around_traceback(log)
            await asyncio.to_thread(check_views_equal_a_rebuild, service.settings())
        finally:
            service.kill()
    emit(
        capsys,
        f"nats restart: {RESTARTS} restarts survived; {figures.commands_acked} acknowledged "
        f"commands checked over {figures.tasks} tasks, {figures.progress_messages} progress "
        f"messages once and in order, {figures.triggers_published} triggers once; "
        f"{load.unavailable} requests met the restart",
    )
