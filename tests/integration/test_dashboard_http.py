"""The dashboard's HTTP side against a real Baton and nats-server: its pages and JSON API answer
from the contract's queries, an unknown task is a 404 page, it is read-only, it follows the
progress stream, finds every instance under its prefix, and rides out NATS going away."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from baton.adapters.config import Settings
from baton.adapters.natsserver import EmbeddedNatsServer
from baton.adapters.ui import Dashboard, parse_addr
from tests.integration.nats_support import Running, running_baton, settings_for, wait_for
from tests.plans import seq


async def started(settings: Settings) -> Dashboard:
    dashboard = Dashboard(settings, "127.0.0.1:0")
    await dashboard.start()
    return dashboard


@pytest.fixture
async def dashboard(baton: Running) -> AsyncIterator[Dashboard]:
    board = await started(baton.settings)
    try:

        async def connected() -> bool:
            return board.link.connected and board.link.client is not None

        await wait_for(connected)
        yield board
    finally:
        await board.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json()


async def test_the_api_answers_with_the_contracts_query_replies(
    baton: Running, dashboard: Dashboard, http: aiohttp.ClientSession
) -> None:
    view = await baton.client.create_task(task_name="report", plan=seq("fetch", "write"))
    task_id = view["task_id"]
    status, tasks = await get_json(http, f"{dashboard.url}/api/tasks")
    assert status == 200
    assert [t["task_id"] for t in tasks["tasks"]] == [task_id]
    status, shown = await get_json(http, f"{dashboard.url}/api/tasks/{task_id}")
    assert status == 200
    assert shown == await baton.client.task(task_id=task_id)
    status, history = await get_json(http, f"{dashboard.url}/api/tasks/{task_id}/history")
    assert [e["version"] for e in history["events"]] == list(range(1, view["version"] + 1))
    status, then = await get_json(http, f"{dashboard.url}/api/tasks/{task_id}/history?version=1")
    assert then["task"]["version"] == 1
    status, queue = await get_json(http, f"{dashboard.url}/api/queue")
    assert status == 200
    assert [s["step_name"] for s in queue["steps"]] == ["fetch"]


async def test_a_filter_and_a_cursor_page_through_the_tasks(
    baton: Running, dashboard: Dashboard, http: aiohttp.ClientSession
) -> None:
    ids = [
        (await baton.client.create_task(task_name=f"t{i}", session_id="s1", plan=seq("a")))[
            "task_id"
        ]
        for i in range(3)
    ]
    await baton.client.create_task(task_name="other", session_id="s2", plan=seq("a"))
    _, first = await get_json(http, f"{dashboard.url}/api/tasks?session_id=s1&limit=2")
    _, rest = await get_json(
        http, f"{dashboard.url}/api/tasks?session_id=s1&limit=2&after={first['cursor']}"
    )
    assert [t["task_id"] for t in first["tasks"] + rest["tasks"]] == ids
    _, queued = await get_json(http, f"{dashboard.url}/api/tasks?status=queued&session_id=s1")
    assert [t["task_id"] for t in queued["tasks"]] == ids[1:]


async def test_an_unknown_task_is_a_404_page_and_a_404_reply(
    dashboard: Dashboard, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{dashboard.url}/tasks/no-such-task") as response:
        assert response.status == 404
        assert response.content_type == "text/html"
        assert 'data-page="notfound"' in await response.text()
    status, body = await get_json(http, f"{dashboard.url}/api/tasks/no-such-task")
    assert status == 404
    assert body["error"]["code"] == 404
    async with http.get(f"{dashboard.url}/no/such/page") as response:
        assert response.status == 404


async def test_the_task_page_carries_its_view_with_no_way_out_of_its_script_tag(
    baton: Running, dashboard: Dashboard, http: aiohttp.ClientSession
) -> None:
    name = "</script><script>alert(1)</script>"
    view = await baton.client.create_task(task_name=name, plan=seq("a"))
    async with http.get(f"{dashboard.url}/tasks/{view['task_id']}") as response:
        assert response.status == 200
        page = await response.text()
    assert "<script>alert" not in page
    start = page.index('<script type="application/json" id="initial">') + len(
        '<script type="application/json" id="initial">'
    )
    initial = json.loads(page[start : page.index("</script>", start)])
    assert initial["view"]["task_name"] == name


async def test_the_dashboard_is_read_only_and_sends_security_headers(
    dashboard: Dashboard, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{dashboard.url}/api/tasks", json={"task_name": "x"}) as response:
        assert response.status == 405
    async with http.get(f"{dashboard.url}/static/app.js") as response:
        assert response.status == 200
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"


async def test_on_loopback_it_refuses_requests_addressed_to_another_host(
    dashboard: Dashboard, http: aiohttp.ClientSession
) -> None:
    """A page on another site cannot read the dashboard through a DNS name rebound to
    127.0.0.1: the Host header gives it away."""
    async with http.get(f"{dashboard.url}/api/tasks", headers={"Host": "evil.example"}) as r:
        assert r.status == 403
    async with http.get(f"{dashboard.url}/api/status", headers={"Host": "localhost"}) as r:
        assert r.status == 200


async def read_live(response: aiohttp.ClientResponse, until: Any) -> list[tuple[str, Any]]:
    """Server-sent events as (name, data), read until ``until(name, data)`` holds."""
    seen: list[tuple[str, Any]] = []
    name = None
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
            seen.append((str(name), data))
            if until(name, data):
                return seen
    raise AssertionError(f"the stream ended: {seen}")


async def test_the_live_stream_follows_progress_events_of_the_task_asked_for(
    baton: Running, dashboard: Dashboard, http: aiohttp.ClientSession
) -> None:
    other = await baton.client.create_task(task_name="other", plan=seq("a"))
    watched = await baton.client.create_task(task_name="watched", plan=seq("a", "b"))
    task_id = watched["task_id"]
    async with http.get(f"{dashboard.url}/api/live?task={task_id}") as response:
        assert response.content_type == "text/event-stream"
        await read_live(response, lambda name, data: name == "status")
        await following(http, dashboard)  # it follows new messages only: be sure, then act
        await baton.client.complete_step(task_id=task_id, step_id=watched["steps"][0]["step_id"])
        await baton.client.complete_step(
            task_id=other["task_id"], step_id=other["steps"][0]["step_id"]
        )
        seen = await asyncio.wait_for(
            read_live(
                response,
                lambda name, data: (
                    name == "batch" and any(e["type"] == "StepCompleted" for e in data["events"])
                ),
            ),
            10,
        )
    events = [e for name, data in seen if name == "batch" for e in data["events"]]
    assert {e["task_id"] for e in events} == {task_id}
    assert "data" not in events[-1]  # the browser gets the words, not the payload


async def _is(value: bool) -> bool:
    return value


async def following(http: aiohttp.ClientSession, dashboard: Dashboard) -> None:
    async def ready() -> bool:
        return bool((await get_json(http, f"{dashboard.url}/api/status"))[1]["following"])

    await wait_for(ready, timeout=10)


async def test_the_instances_are_every_service_under_the_prefix_and_no_other(
    baton: Running, dashboard: Dashboard, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    second = replace(baton.settings, data_dir=tmp_path / "second")
    elsewhere = settings_for(baton.settings.nats_url, tmp_path / "elsewhere")
    async with running_baton(second), running_baton(elsewhere):
        status, reply = await get_json(http, f"{dashboard.url}/api/instances")
    assert status == 200
    assert reply["prefix"] == baton.settings.subject_prefix
    assert len(reply["instances"]) == 2
    for instance in reply["instances"]:
        assert instance["version"]
        subjects = {e["subject"] for e in instance["endpoints"]}
        assert f"{baton.settings.subject_prefix}.query.task" in subjects
        assert all("num_requests" in e for e in instance["endpoints"])


async def test_without_nats_the_api_answers_503_and_the_dashboard_recovers_by_itself(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")  # its port is chosen, not yet served
    board = await started(Settings(nats_url=server.url, data_dir=tmp_path, subject_prefix="t"))
    try:
        status, body = await get_json(http, f"{board.url}/api/tasks")
        assert status == 503
        assert body["error"]["reason"] == "nats_unreachable"
        _, health = await get_json(http, f"{board.url}/api/status")
        assert health["nats"] in ("connecting", "disconnected")
        await asyncio.to_thread(server.start)
        try:

            async def reconnected() -> bool:
                return (await get_json(http, f"{board.url}/api/status"))[1]["nats"] == "connected"

            await wait_for(reconnected, timeout=15)
            await asyncio.to_thread(server.stop)
            await wait_for(lambda: _is(not board.link.connected), timeout=15)
            _, health = await get_json(http, f"{board.url}/api/status")
            assert health["nats"] == "disconnected"
            await asyncio.to_thread(server.start)
            await wait_for(reconnected, timeout=15)
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        await board.close()


def test_the_address_setting_defaults_to_loopback_and_empty_turns_it_off() -> None:
    assert Settings.from_env({}).ui_addr == "127.0.0.1:8600"
    assert Settings.from_env({"BATON_UI_ADDR": ""}).ui_addr is None
    assert Settings.from_env({"BATON_UI_ADDR": "0.0.0.0:9000"}).ui_addr == "0.0.0.0:9000"
    assert Settings().ui_addr is None  # settings made in code open no port
    assert parse_addr("127.0.0.1:8600") == ("127.0.0.1", 8600)
    assert parse_addr("[::1]:8600") == ("::1", 8600)
    assert parse_addr(":8600") == ("127.0.0.1", 8600)
    with pytest.raises(ValueError):
        parse_addr("8600x")
