"""On PostgreSQL, events another instance commits wake this instance's relay and projections
(LISTEN/NOTIFY), instead of waiting for their next poll.

The tests write through a second application on the same database (another instance, as far as
this one can tell: nothing in this process tells the relay), with the polls made an hour long:
only a notification can explain the message and the views arriving.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from baton.adapters import background
from baton.adapters.config import Settings, event_store_env
from baton.adapters.publication import listener as listener_module
from baton.domain import commands as c
from baton.domain.services import BatonApp
from tests.integration.nats_support import running_baton, settings_for
from tests.plans import seq

pytestmark = pytest.mark.postgres

HOUR = 3600.0


@pytest.fixture
def slow_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "PROJECTION_INTERVAL_S", HOUR)
    monkeypatch.setattr(listener_module, "LISTENING_POLL_S", HOUR)


async def test_events_of_another_instance_are_published_and_projected_at_once(
    nats_url: str, tmp_path: Path, postgres_db: dict[str, Any], slow_polls: None,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    settings = settings_for(nats_url, tmp_path / "data", postgres_url=postgres_db["url"])
    async with running_baton(settings) as baton:
        relay, projections = baton.baton.relay, baton.baton.projections
        assert relay is not None and projections is not None
        assert relay.poll_interval == HOUR
        assert baton.baton.listener is not None and baton.baton.listener.listening.is_set()
        received: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()

        async def on_progress(msg: Any) -> None:
            await received.put((time.monotonic(), json.loads(msg.data)))

        await baton.nc.subscribe(f"{baton.prefix}.progress.>", cb=on_progress)
        await baton.nc.flush()
        other = BatonApp(event_store_env(Settings(postgres_url=postgres_db["url"])))
        latencies: list[float] = []
        after_commit: list[float] = []
        try:
            for n in range(20):
                sent = time.monotonic()
                view = await asyncio.to_thread(
                    other.handle, c.CreateTask(task_name=f"t{n}", plan=seq("a"))
                )
                committed = time.monotonic()
                while True:  # the first message of this task (the last one's may trail)
                    first_at, first = await asyncio.wait_for(received.get(), 10)
                    if first["task_id"] == view["task_id"]:
                        break
                latencies.append(first_at - sent)
                after_commit.append(first_at - committed)
        finally:
            other.close()

        async def projected() -> bool:
            return (await asyncio.to_thread(projections.lag))["behind"] == 0

        deadline = time.monotonic() + 10
        while not await projected():  # no query ran: only the runner applies events
            assert time.monotonic() < deadline, "the views did not catch up"
            await asyncio.sleep(0.05)
    with capsys.disabled():
        print(
            f"\n[figures] postgres notify: another instance's command to its first progress "
            f"message here: median {statistics.median(latencies) * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms; from its commit's return: median "
            f"{statistics.median(after_commit) * 1000:.1f} ms (relay poll: {HOUR:g} s)",
            flush=True,
        )
