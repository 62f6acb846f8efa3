"""Connection loss: when the NATS server restarts, Baton reconnects, serves again, and
publication catches up with what happened meanwhile."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats

from baton.adapters.bootstrap import Baton
from baton.adapters.client import BatonClient, BatonUnavailable
from baton.adapters.natsserver import EmbeddedNatsServer
from baton.adapters.publication import stream_names
from tests.integration.nats_support import settings_for
from tests.plans import seq


async def test_baton_reconnects_after_the_server_restarts_and_publication_catches_up(
    tmp_path: Path,
) -> None:
    with EmbeddedNatsServer(tmp_path / "js") as server:
        settings = settings_for(server.url, tmp_path / "data")
        baton = await Baton.start(settings)
        nc = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
        client = BatonClient(nc, prefix=settings.subject_prefix, timeout=2)
        try:
            task = await client.create_task(task_name="t", plan=seq("a", "b", "c"))
            await asyncio.to_thread(server.restart)

            async def advance() -> dict[str, object]:
                for _ in range(100):
                    try:
                        return await client.next_step(task_id=task["task_id"], msg_id="n-1")
                    except BatonUnavailable:
                        await asyncio.sleep(0.1)
                raise AssertionError("Baton did not come back")

            assert (await advance())["status"] == "queued"
            history = (await client.history(task_id=task["task_id"]))["events"]

            js = nc.jetstream()
            stream = stream_names(settings.subject_prefix)[0]
            for _ in range(100):
                info = await js.stream_info(stream)
                if info.state.messages >= len(history):
                    break
                await asyncio.sleep(0.1)
            published = [
                json.loads((await js.get_msg(stream, seq)).data or b"{}")["version"]
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
            assert published == [e["version"] for e in history]
        finally:
            await nc.close()
            await baton.close()
