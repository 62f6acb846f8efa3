"""Hostile sizes against the publishers (#11 finding 1): one event too big for a NATS message must
not stop publication. It goes out in a form that fits, saying where its data is, and every later
event of every task still goes out, in order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from baton.adapters.config import Settings, event_store_env
from baton.adapters.natsserver import EmbeddedNatsServer
from baton.adapters.publication import ProgressRelay, ensure_streams, stream_names
from baton.domain import commands as c
from baton.domain.plans import Plan
from baton.domain.services import BatonApp

MAX_PAYLOAD = 64 * 1024


@pytest.fixture(scope="module")
def small_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    """A nats-server whose messages carry at most 64 KiB."""
    with EmbeddedNatsServer(tmp_path_factory.mktemp("small-nats"), max_payload=MAX_PAYLOAD) as s:
        yield s


@pytest.fixture
async def js(small_nats: EmbeddedNatsServer) -> AsyncIterator[Any]:
    nc = await nats.connect(small_nats.url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[BatonApp]:
    application = BatonApp(event_store_env(Settings(data_dir=tmp_path / "data")))
    yield application
    application.close()


def big_plan(steps: int, text: int) -> Plan:
    """A plan whose Created event is about ``steps * text`` bytes."""
    return Plan.model_validate(
        {"steps": [{"step_name": f"s{i}", "description": "d" * text} for i in range(steps)]}
    )


async def test_an_event_too_big_for_a_message_goes_out_shortened_and_the_relay_goes_on(
    app: BatonApp, js: Any, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = "hostilesizes"
    await ensure_streams(js, prefix)
    try:
        before = app.handle(c.CreateTask(task_name="before", plan=big_plan(1, 10)))
        huge = app.handle(c.CreateTask(task_name="huge", plan=big_plan(40, 4000)))
        after = app.handle(c.CreateTask(task_name="after", plan=big_plan(2, 10)))
        app.handle(c.StartTask(task_id=huge["task_id"]))
        relay = ProgressRelay(app, js, prefix, batch=2)
        stored = app.recorder.max_notification_id()
        while relay.read_position() < stored:
            await relay.pump_once()
        assert relay.read_position() == app.recorder.max_notification_id()

        stream = stream_names(prefix)[0]
        info = await js.stream_info(stream)
        messages = [
            await js.get_msg(stream, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        by_task: dict[str, list[dict[str, Any]]] = {}
        for msg in messages:
            assert len(msg.data) <= MAX_PAYLOAD
            body = json.loads(msg.data)
            by_task.setdefault(body["task_id"], []).append(body)
        for task in (before, huge, after):
            history = app.history(task["task_id"])
            published = by_task[task["task_id"]]
            assert [(m["type"], m["version"]) for m in published] == [
                (h["type"], h["version"]) for h in history
            ]
        created = by_task[huge["task_id"]][0]
        assert created["type"] == "Created"
        assert created["data"] == {}
        assert created["display_message"] == app.history(huge["task_id"])[0]["display_message"]
        assert f"{prefix}.query.history" in created["data_omitted"]["message"]
        assert created["data_omitted"]["bytes"] > MAX_PAYLOAD
        assert relay.shortened == 1
        assert "publishing it without its data" in caplog.text
    finally:
        for name in stream_names(prefix):
            await js.delete_stream(name)
