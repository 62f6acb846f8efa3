"""Timeouts that agree (#14.5): every command the typed client sends carries a Nats-Msg-Id, a
timed-out command is sent again with the same id, and a command that may wait on the planner
waits longer than the service's planner timeout. A reported failure that did happen is
impossible through the client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from baton.adapters.cli import build_parser
from baton.adapters.cli.common import connect
from baton.adapters.client import BatonClient, BatonUnavailable
from tests.integration.nats_support import new_prefix, planner_service, running_baton, settings_for
from tests.plans import seq

MSG_ID = "Nats-Msg-Id"


class Copies:
    """A plain subscriber beside the service: sees a copy of each request, answers none."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def record(self, msg: Msg) -> None:
        self.requests.append((msg.subject, dict(msg.headers or {})))

    def ids(self, subject: str) -> list[str | None]:
        return [h.get(MSG_ID) for s, h in self.requests if s == subject]


async def test_a_timed_out_create_is_sent_again_with_its_id_and_makes_one_task(
    nats_url: str, tmp_path: Path
) -> None:
    async def slow_plan(request: dict[str, Any]) -> Any:
        await asyncio.sleep(1.5)  # longer than the client waits for one attempt
        return seq("a", "b")

    settings = settings_for(nats_url, tmp_path, planner_timeout_s=10.0)
    async with running_baton(settings) as baton:
        copies = Copies()
        await baton.nc.subscribe(f"{baton.prefix}.task.create", cb=copies.record)
        async with planner_service(nats_url, baton.prefix, plan=slow_plan) as asked:
            client = await BatonClient.connect(
                nats_url, prefix=baton.prefix, timeout=1.0, planning_timeout=1.0, retries=8
            )
            async with client:
                view = await client.create_task(task_name="slow", session_id="slow-1")
            tasks = (await baton.client.tasks(session_id="slow-1"))["tasks"]
    assert [t["task_id"] for t in tasks] == [view["task_id"]]
    ids = copies.ids(f"{baton.prefix}.task.create")
    assert len(ids) >= 2, "the first attempt did not time out"
    assert ids[0] and set(ids) == {ids[0]}, ids
    assert len(asked) >= 1


async def test_every_command_carries_an_id_and_queries_none(nats_url: str, tmp_path: Path) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        copies = Copies()
        await baton.nc.subscribe(f"{baton.prefix}.>", cb=copies.record)
        await baton.nc.flush()
        client = baton.client
        one = await client.create_task(task_name="t", plan=seq("a"))
        two = await client.create_task(task_name="t", plan=seq("a"))
        await client.start_task(task_id=one["task_id"])
        await client.create_task(task_name="t", plan=seq("a"), command_id="mine-1")
        await client.task(task_id=two["task_id"])
        await asyncio.sleep(0.2)  # the copies arrive beside the replies
    create = copies.ids(f"{baton.prefix}.task.create")
    assert len(create) == 3 and create[0] and create[1] and create[0] != create[1]
    assert create[2] is None  # the body's command_id is the id; no header to override it
    assert all(copies.ids(f"{baton.prefix}.task.start"))
    assert copies.ids(f"{baton.prefix}.query.task") == [None]


async def test_after_every_retry_the_error_names_the_id_to_repeat(nats_url: str) -> None:
    prefix = new_prefix()
    silent = await nats.connect(nats_url)
    copies = Copies()
    await silent.subscribe(
        f"{prefix}.task.start", cb=copies.record
    )  # takes requests, never answers
    await silent.flush()
    try:
        client = await BatonClient.connect(nats_url, prefix=prefix, timeout=0.3, retries=2)
        async with client:
            with pytest.raises(BatonUnavailable) as lost:
                await client.start_task(task_id="t1")
    finally:
        await silent.close()
    ids = copies.ids(f"{prefix}.task.start")
    assert len(ids) == 3 and ids[0] and set(ids) == {ids[0]}
    assert lost.value.reason == "timeout"
    assert lost.value.details == {"msg_id": ids[0]}
    assert "3 attempts of 0.3 s" in lost.value.message


async def test_a_command_that_may_wait_on_the_planner_outwaits_the_planner(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = await nats.connect(nats_url)
    try:
        client = BatonClient(nc)  # defaults, against the service's default planner timeout (60 s)
        assert client.timeout_for("task.create", {"task_name": "t"}) > 60
        assert client.timeout_for("task.replan", {"task_id": "t"}) > 60
        assert client.timeout_for("task.next", {"task_id": "t", "replan": True}) > 60
        assert client.timeout_for("task.next", {"task_id": "t"}) == client.timeout < 60
        assert client.timeout_for("task.create", {"task_name": "t", "plan": {}}) < 60
    finally:
        await nc.close()
    # The CLI follows the deployment's planner timeout.
    monkeypatch.setenv("BATON_PLANNER_TIMEOUT_S", "90")
    args = build_parser().parse_args(["--nats", nats_url, "ls"])
    cli = await connect(args)
    try:
        assert cli.timeout_for("task.create", {"task_name": "t"}) > 90
        assert cli.timeout_for("query.tasks", {}) == args.request_timeout
    finally:
        await cli.nc.close()
