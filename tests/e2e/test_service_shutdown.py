"""Stopping Baton as a terminal or a service manager does (issue 13, item 7): Ctrl-C in the
terminal of ``make run`` sends SIGINT to the whole foreground process group, ``kill -TERM -PGID``
(a control-group stop) SIGTERM to it. Either way Baton drains in about a second and exits 0, and
the nats-server it started itself is stopped last, after the connections to it are drained."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from baton.adapters.client import BatonClient
from baton.adapters.natsserver import free_port, nats_answers
from tests.faults.support import new_prefix
from tests.processes import ServiceProcess


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill-group"])
async def test_a_signal_to_the_process_group_drains_in_about_a_second_and_exits_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing answers there: Baton starts its own server
    service = ServiceProcess(url, tmp_path / "data", new_prefix(), own_session=True)
    await asyncio.to_thread(service.start)
    try:
        assert "started an embedded nats-server" in service.log()
        async with await BatonClient.connect(url, prefix=service.prefix) as client:
            task = await client.create_task(task_name="t", plan={"steps": [{"step_name": "a"}]})
            assert task["task_id"]
        assert service.process is not None
        os.killpg(service.process.pid, sig)  # the whole group, as the terminal does
        started = time.monotonic()
        code = await asyncio.to_thread(service.wait, 30)
        took = time.monotonic() - started
    finally:
        service.kill()
    log = service.log()
    assert code == 0, log[-3000:]
    assert took < 5, f"the shutdown took {took:.1f} s (measured ~1 s):\n{log[-3000:]}"
    # The server outlived the drain: no lost connection, no reconnect attempts.
    assert "NATS:" not in log, log[-3000:]
    lines = [line.split(": ", 1)[-1] for line in log.splitlines()]
    stopping = lines.index("stopping")
    assert lines[stopping:][-2:] == ["embedded nats-server stopped", "stopped"], lines[stopping:]
    assert not nats_answers(url, timeout=0.5), "the embedded nats-server is still running"
