"""The service against hostile clients and oversized answers (issue 11, items 2, 5, 6, 8): a reply
too big for the NATS server becomes a 413 error reply instead of silence; a planner that never
answers holds a bounded share of the in-flight requests, so queries and creates with a plan are
still served; ``Nats-Msg-Id`` and ``command_id`` are bounded (400 beyond 256 characters); a
request whose reply subject is one of Baton's own subjects or a ``$`` subject is never answered
(nor executed).

Each test runs a ``BatonService`` of its own (its own subject prefix) beside a running Baton on the
session's nats-server (1 MiB ``max_payload``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from baton.adapters.planner import NatsPlanner
from baton.adapters.service import BatonService
from baton.adapters.subscriptions import flush_subscriptions
from baton.domain import commands as c
from baton.domain.errors import InvalidRequest
from baton.domain.limits import MAX_ID
from tests.integration.nats_support import Running, new_prefix, rejected, side_service, wait_for
from tests.plans import seq

MIB = 1024 * 1024


def error_of(msg: Msg) -> dict[str, Any]:
    """The contract error of a reply, checked against its headers."""
    error: dict[str, Any] = json.loads(msg.data)["error"]
    headers = msg.headers or {}
    assert headers["Nats-Service-Error-Code"] == str(error["code"])
    assert headers["Nats-Service-Error"] == " ".join(error["message"].split())
    return error


# -- replies over max_payload (item 2) -------------------------------------------------------


class HugeQueries:
    """A read side whose task view is 2 MiB: more than the server's 1 MiB max_payload."""

    def catch_up(self) -> int:
        return 0

    def task(self, task_id: str) -> dict[str, Any]:
        return {"task_id": task_id, "context": {"blob": "x" * (2 * MIB)}}


class HugeReplies:
    """An application whose every command is applied and answered with 2 MiB."""

    max_message_bytes = 0

    def __init__(self) -> None:
        self.applied: list[c.Command] = []

    def handle_batch(self, requests: list[tuple[c.Command, str | None]]) -> list[Any]:
        self.applied += [command for command, _ in requests]
        return [{"task_id": "t1", "blob": "x" * (2 * MIB)} for _ in requests]

    def reply_for(self, command_id: str) -> None:
        return None


async def test_a_query_reply_over_max_payload_is_a_413_error_reply(baton: Running) -> None:
    async with side_service(baton, queries=HugeQueries()) as prefix:
        msg = await baton.nc.request(f"{prefix}.query.task", b'{"task_id": "x"}', timeout=5)
    error = error_of(msg)
    assert (error["code"], error["reason"]) == (413, "too_large")
    assert error["details"]["limit"] == baton.nc.max_payload
    assert error["details"]["size"] > 2 * MIB
    assert error["details"]["applied"] is False


async def test_a_command_reply_over_max_payload_says_the_command_was_applied(
    baton: Running,
) -> None:
    app = HugeReplies()
    async with side_service(baton, app=app, queries=HugeQueries()) as prefix:
        # The service tells an application that can hear it the largest message it may produce.
        assert app.max_message_bytes == baton.baton.nc.max_payload > 0
        body = json.dumps({"task_id": "t1"}).encode()
        msg = await baton.nc.request(f"{prefix}.task.start", body, timeout=5)
    error = error_of(msg)
    assert (error["code"], error["reason"]) == (413, "too_large")
    assert error["details"]["applied"] is True
    assert "query.task" in error["message"]
    assert [type(command) for command in app.applied] == [c.StartTask]


# -- a silent planner (item 5) ---------------------------------------------------------------


async def test_a_silent_planner_cannot_take_every_in_flight_slot(
    baton: Running, nats_url: str
) -> None:
    prefix = new_prefix()
    planner_nc = await nats.connect(nats_url)
    held: list[Msg] = []

    async def never_answer(msg: Msg) -> None:
        held.append(msg)

    await planner_nc.subscribe(f"{prefix}.planner.plan", cb=never_answer)
    await flush_subscriptions(planner_nc)
    service = BatonService(
        baton.baton.nc,
        baton.app,
        baton.baton.projections,  # type: ignore[arg-type]
        prefix=prefix,
        planner=NatsPlanner(baton.baton.nc, prefix, timeout_s=120),
        max_in_flight=16,
        planner_concurrency=4,
    )
    await service.start()
    nc = baton.nc
    try:
        planless = json.dumps({"task_name": "needs a plan"}).encode()
        waiting = [
            asyncio.create_task(nc.request(f"{prefix}.task.create", planless, timeout=120))
            for _ in range(30)
        ]
        # 4 wait for the planner; the 26 others are told at once that it is busy.
        await wait_for(lambda: _count_done(waiting, 26), timeout=20)
        busy = [error_of(t.result()) for t in waiting if t.done()]
        assert len(busy) == 26
        assert {(e["code"], e["reason"]) for e in busy} == {(503, "planner_unavailable")}
        assert "wait for the planner" in busy[0]["message"]
        assert len(held) == 4

        # Other work is served while the planner stays silent.
        body = json.dumps({"task_name": "planned", "plan": seq("a")}).encode()
        created = json.loads((await nc.request(f"{prefix}.task.create", body, timeout=10)).data)
        assert created["task_name"] == "planned"
        query = json.dumps({"task_id": created["task_id"]}).encode()
        view = json.loads((await nc.request(f"{prefix}.query.task", query, timeout=10)).data)
        assert view["task_id"] == created["task_id"]
    finally:
        # The planner gives up: the 4 waiting creates end (503) and the service can stop.
        for msg in held:
            await planner_nc.publish(
                msg.reply,
                b"",
                headers={"Nats-Service-Error": "gone", "Nats-Service-Error-Code": "503"},
            )
        await planner_nc.flush()
        results = await asyncio.gather(*waiting, return_exceptions=True)
        await service.stop()
        await planner_nc.close()
    assert all(error_of(r)["code"] == 503 for r in results if isinstance(r, Msg))


async def _count_done(tasks: list[asyncio.Task[Any]], count: int) -> bool:
    return sum(t.done() for t in tasks) >= count


# -- ids (item 6) ----------------------------------------------------------------------------


async def test_a_nats_msg_id_over_256_characters_is_400_and_remembered_nowhere(
    baton: Running,
) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a"))
    body = json.dumps({"task_id": task["task_id"]}).encode()
    long_id = "k" * (MAX_ID + 1)
    before = baton.notifications()
    headers, reply = await baton.raw("task.start", body, headers={"Nats-Msg-Id": long_id})
    assert (reply["error"]["code"], reply["error"]["reason"]) == (400, "invalid_request")
    assert headers["Nats-Service-Error-Code"] == "400"
    assert reply["error"]["details"] == {"size": MAX_ID + 1, "limit": MAX_ID}
    assert baton.notifications() == before
    assert baton.app.reply_for(long_id) is None
    # At the limit the id is used.
    headers, reply = await baton.raw("task.start", body, headers={"Nats-Msg-Id": "k" * MAX_ID})
    assert "Nats-Service-Error-Code" not in headers, reply
    assert baton.app.reply_for("k" * MAX_ID) is not None


async def test_a_command_id_over_256_characters_is_400(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a"))
    body = {"task_id": task["task_id"], "command_id": "k" * (MAX_ID + 1)}
    error = await rejected(baton, "task.start", body, 400, "invalid_request")
    assert error["details"]["errors"][0]["loc"] == "command_id"


# -- reply subjects (item 8) -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["trigger.s1", "progress.t1", "task.cancel", "$JS.hostile.x"])
async def test_a_reply_subject_under_batons_prefix_or_a_system_subject_is_never_answered(
    baton: Running, nats_url: str, where: str
) -> None:
    prefix = baton.prefix
    reply = where if where.startswith("$") else f"{prefix}.{where}"
    spy = await nats.connect(nats_url)
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    await spy.subscribe(reply, cb=record)
    await flush_subscriptions(spy)
    service = baton.baton.service
    assert service is not None
    before, refused = baton.notifications(), service.refused
    try:
        body = json.dumps({"task_name": "injected", "plan": seq("a")}).encode()
        await baton.nc.publish(f"{prefix}.task.create", body, reply=reply)
        # The explicit signal: the service counted the request as refused.
        await wait_for(lambda: _is(service.refused, refused + 1), timeout=10)
        await spy.flush()
    finally:
        await spy.close()
    assert seen == []
    assert baton.notifications() == before  # refused, so not executed either
    # An ordinary request on the same connection is answered as always.
    assert (await baton.client.create_task(task_name="fine", plan=seq("a")))["task_id"]


async def _is(value: int, expected: int) -> bool:
    return value == expected


@pytest.mark.parametrize("verb", ["PING", "INFO", "STATS"])
async def test_the_srv_verbs_never_answer_into_batons_streams_either(
    baton: Running, nats_url: str, verb: str
) -> None:
    reply = f"{baton.prefix}.trigger.s1"
    spy = await nats.connect(nats_url)
    seen: list[Msg] = []

    async def record(msg: Msg) -> None:
        seen.append(msg)

    await spy.subscribe(reply, cb=record)
    await flush_subscriptions(spy)
    service = baton.baton.service
    assert service is not None
    refused = service.refused
    try:
        # Every Baton on the server gets it; this test's is the one under the spy's prefix.
        await baton.nc.publish(f"$SRV.{verb}.baton", b"", reply=reply)
        await wait_for(lambda: _is(service.refused, refused + 1), timeout=10)
        await spy.flush()
    finally:
        await spy.close()
    assert seen == []
    # Asked properly, the verb still answers.
    msg = await baton.nc.request(f"$SRV.{verb}.baton", b"", timeout=5)
    assert json.loads(msg.data)["name"] == "baton"


class VerboseQueries:
    """A read side whose error carries 2 MiB of details: more than a message can."""

    def catch_up(self) -> int:
        return 0

    def task(self, task_id: str) -> dict[str, Any]:
        raise InvalidRequest("no such view", details={"blob": "d" * (2 * MIB)})


async def test_an_error_too_big_for_its_details_is_sent_with_its_message_only(
    baton: Running,
) -> None:
    async with side_service(baton, queries=VerboseQueries()) as prefix:
        msg = await baton.nc.request(f"{prefix}.query.task", b'{"task_id": "x"}', timeout=5)
    error = error_of(msg)
    assert (error["code"], error["reason"], error["message"]) == (
        400,
        "invalid_request",
        "no such view",
    )
    assert "details" not in error
