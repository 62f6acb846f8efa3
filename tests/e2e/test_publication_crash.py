"""The progress relay in its own process, SIGKILLed while it publishes a few thousand events,
then started again: the stream holds every event exactly once, in order within each task."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from baton.adapters.config import Settings, event_store_env
from baton.adapters.publication import ensure_streams, stream_names
from baton.domain import commands as c
from baton.domain.services import HANDLERS, BatonApp, UnitOfWork
from tests.plans import seq

ROOT = Path(__file__).resolve().parents[2]
PLAN = seq("a", "b", "c", "d")

#: The relay alone, as the service runs it: until SIGTERM, or a SIGKILL.
RELAY = """
import asyncio, signal, sys
from pathlib import Path
import nats
from baton.adapters.config import Settings, event_store_env
from baton.adapters.publication import ProgressRelay
from baton.domain.services import BatonApp

async def main(url, data_dir, prefix):
    app = BatonApp(env=event_store_env(Settings(data_dir=Path(data_dir))))
    nc = await nats.connect(url)
    relay = ProgressRelay(app, nc.jetstream(), prefix=prefix, batch=50)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await relay.run(stop)
    await nc.drain()
    app.close()

asyncio.run(main(*sys.argv[1:]))
"""


def start_relay(url: str, data_dir: Path, prefix: str) -> subprocess.Popen[bytes]:
    """The relay process; its stderr goes to ``relay.log`` beside the data."""
    with (data_dir.parent / "relay.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", RELAY, url, str(data_dir), prefix],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def relay_log(data_dir: Path) -> str:
    path = data_dir.parent / "relay.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def make_events(data_dir: Path, tasks: int) -> tuple[list[str], int]:
    """Tasks driven to completion through the command handlers, saved 50 tasks per transaction
    (one save per command is too slow on a small disk); returns the ids and the event count."""
    app = BatonApp(env=event_store_env(Settings(data_dir=Path(data_dir))))
    task_ids: list[str] = []
    try:
        for first in range(0, tasks, 50):
            uow = UnitOfWork(app)
            chunk = [
                HANDLERS[c.CreateTask](app, uow, c.CreateTask(task_name=f"job {i}", plan=PLAN))[
                    "task_id"
                ]
                for i in range(first, min(first + 50, tasks))
            ]
            for task_id in chunk:
                HANDLERS[c.StartTask](app, uow, c.StartTask(task_id=task_id))
            for _ in PLAN["steps"]:
                for task_id in chunk:
                    HANDLERS[c.NextStep](app, uow, c.NextStep(task_id=task_id))
            app.save(*uow.changed())
            task_ids += chunk
        events = sum(app.get_task(t).version for t in task_ids)
        return task_ids, events
    finally:
        app.close()


async def stream_count(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def read_stream(js: Any, prefix: str, count: int) -> list[Any]:
    """Every message of the progress stream, in stream order, through an ephemeral consumer."""
    sub = await js.pull_subscribe(
        f"{prefix}.progress.>",
        stream=stream_names(prefix)[0],
        config=ConsumerConfig(ack_policy=AckPolicy.NONE),
    )
    messages: list[Any] = []
    try:
        while len(messages) < count:
            messages += await sub.fetch(min(1000, count - len(messages)), timeout=5)
    finally:
        await sub.unsubscribe()
    return messages


@pytest.mark.slow
async def test_a_relay_killed_mid_publication_resumes_without_loss_or_repeat(
    nats_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    task_ids, total = await asyncio.to_thread(make_events, data_dir, 240)
    assert total > 2500  # enough for the kill to land mid-publication
    prefix = f"t{uuid.uuid4().hex[:10]}"
    stream = stream_names(prefix)[0]
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, prefix)
    try:
        relay = start_relay(nats_url, data_dir, prefix)
        try:
            deadline = time.monotonic() + 20
            while (seen := await stream_count(js, stream)) < total // 4:
                assert relay.poll() is None, f"the relay exited early:\n{relay_log(data_dir)}"
                assert time.monotonic() < deadline, "the relay published too little"
                await asyncio.sleep(0.005)
        finally:
            relay.send_signal(signal.SIGKILL)
            relay.wait()
        killed_at = await stream_count(js, stream)
        assert seen <= killed_at < total, "killed too late to test anything"

        started = time.monotonic()
        again = start_relay(nats_url, data_dir, prefix)
        try:
            while await stream_count(js, stream) < total:
                assert time.monotonic() - started < 20, "the restarted relay did not catch up"
                await asyncio.sleep(0.05)
        finally:
            # A relay stopped by SIGTERM makes its last pump before it exits: once it has
            # exited, everything it would ever publish is in the stream, repeats included.
            again.send_signal(signal.SIGTERM)
            assert again.wait(timeout=10) == 0
        assert await stream_count(js, stream) == total, "a repeat reached the stream"

        messages = await read_stream(js, prefix, await stream_count(js, stream))
        assert len(messages) == total
        msg_ids = [m.headers["Nats-Msg-Id"] for m in messages]
        assert len(set(msg_ids)) == total
        versions: dict[str, list[int]] = {}
        for m in messages:
            body = json.loads(m.data)
            versions.setdefault(body["task_id"], []).append(body["version"])
        assert sorted(versions) == sorted(task_ids)
        for task_versions in versions.values():
            assert task_versions == list(range(1, len(task_versions) + 1))
    finally:
        await js.delete_stream(stream)
        await js.delete_stream(stream_names(prefix)[1])
        await nc.close()
