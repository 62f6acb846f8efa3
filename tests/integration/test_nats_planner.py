"""The planner path: a create or replan without a plan asks a planner service over NATS."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.nats_support import Running, StartBaton, planner_service, rejected
from tests.plans import seq


@pytest.fixture
async def baton(start_baton: StartBaton) -> Running:
    return await start_baton(planner_timeout_s=0.5)


async def answer(value: Any) -> Any:
    return value


# -- plans from the planner ------------------------------------------------------------------


async def test_create_without_a_plan_asks_the_planner(baton: Running, nats_url: str) -> None:
    async with planner_service(
        nats_url, baton.prefix, plan=lambda _: answer(seq("research", "write"))
    ) as seen:
        task = await baton.client.create_task(task_name="Essay", task_instruction="on bees")
    assert seen == [("plan", {"task_name": "Essay", "task_instruction": "on bees"})]
    assert [s["step_name"] for s in task["steps"]] == ["research", "write"]
    assert task["current_step"]["step_name"] == "research"


async def test_the_planner_may_wrap_its_plan_in_a_plan_field(baton: Running, nats_url: str) -> None:
    wrapped = {"plan": seq("only", goal="be brief")}
    async with planner_service(nats_url, baton.prefix, plan=lambda _: answer(wrapped)):
        task = await baton.client.create_task(task_name="t")
    assert task["goal"] == "be brief"
    assert [s["step_name"] for s in task["steps"]] == ["only"]


async def test_replan_without_a_plan_asks_the_planner_with_the_task(
    baton: Running, nats_url: str
) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    async with planner_service(
        nats_url, baton.prefix, replan=lambda _: answer(seq("a", "b", "c"))
    ) as seen:
        view = await baton.client.replan_task(task_id=task["task_id"])
    assert view["diff"] == {"added": ["c"], "changed": [], "removed": []}
    [(verb, request)] = seen
    assert verb == "replan"
    assert request["advance_next"] is False
    assert request["task"]["task_id"] == task["task_id"]
    assert [s["step_name"] for s in request["task"]["steps"]] == ["a", "b"]


async def test_next_with_replan_asks_the_planner_then_advances(
    baton: Running, nats_url: str
) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    async with planner_service(
        nats_url, baton.prefix, replan=lambda _: answer(seq("a", "z"))
    ) as seen:
        reply = await baton.client.next_step(task_id=task["task_id"], replan=True)
    assert seen[0][1]["advance_next"] is True
    assert reply["status"] == "queued"
    assert reply["step"]["step_name"] == "z"


# -- no planner, a slow one, a broken one ---------------------------------------------------------


async def test_no_planner_is_503_and_nothing_is_created(baton: Running) -> None:
    error = await rejected(baton, "task.create", {"task_name": "t"}, 503, "planner_unavailable")
    assert "planner.plan" in error["message"]
    assert (await baton.client.tasks())["tasks"] == []


async def test_a_planner_that_does_not_answer_in_time_is_503(baton: Running, nats_url: str) -> None:
    async def slow(_: dict[str, Any]) -> Any:
        await asyncio.sleep(2)
        return seq("late")

    async with planner_service(nats_url, baton.prefix, plan=slow):
        error = await rejected(baton, "task.create", {"task_name": "t"}, 503, "planner_unavailable")
    assert "0.5 s" in error["message"]
    assert (await baton.client.tasks())["tasks"] == []


async def test_no_replanner_is_503_and_the_task_is_unchanged(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    await rejected(
        baton,
        "task.next",
        {"task_id": task["task_id"], "replan": True},
        503,
        "planner_unavailable",
    )
    await rejected(baton, "task.replan", {"task_id": task["task_id"]}, 503, "planner_unavailable")
    assert (await baton.client.task(task_id=task["task_id"]))["version"] == task["version"]


@pytest.mark.parametrize(
    "bad",
    [
        b"not json at all",
        json.dumps({"steps": []}).encode(),
        json.dumps({"steps": [{"step_name": "a", "depends_on": ["a"]}]}).encode(),
        json.dumps({"steps": [{"name": "wrong field"}]}).encode(),
        json.dumps(["a", "b"]).encode(),
    ],
    ids=["not-json", "empty", "self-dependency", "wrong-field", "a-list"],
)
async def test_an_unusable_plan_is_400_and_nothing_is_created(
    baton: Running, nats_url: str, bad: bytes
) -> None:
    async with planner_service(nats_url, baton.prefix, plan=lambda _: answer(bad)):
        await rejected(baton, "task.create", {"task_name": "t"}, 400, "invalid_plan")
    assert (await baton.client.tasks())["tasks"] == []


async def test_an_unusable_replan_is_400_and_the_task_is_unchanged(
    baton: Running, nats_url: str
) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    cyclic = {
        "steps": [{"step_name": "x", "depends_on": ["y"]}, {"step_name": "y", "depends_on": ["x"]}]
    }
    async with planner_service(nats_url, baton.prefix, replan=lambda _: answer(cyclic)):
        await rejected(baton, "task.replan", {"task_id": task["task_id"]}, 400, "invalid_plan")
    assert (await baton.client.task(task_id=task["task_id"]))["version"] == task["version"]


# -- what is checked before the planner is asked --------------------------------------------------


async def test_a_malformed_create_is_400_even_without_a_planner(baton: Running) -> None:
    await rejected(baton, "task.create", {"task_name": ""}, 400, "invalid_request")
    await rejected(baton, "task.create", {"task_nam": "typo"}, 400, "invalid_request")


async def test_replan_of_an_ended_or_unknown_task_fails_before_asking_the_planner(
    baton: Running, nats_url: str
) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a"))
    await baton.client.cancel_task(task_id=task["task_id"])
    async with planner_service(nats_url, baton.prefix, replan=lambda _: answer(seq("a"))) as seen:
        await rejected(
            baton, "task.replan", {"task_id": task["task_id"]}, 409, "invalid_transition"
        )
        await rejected(
            baton,
            "task.next",
            {"task_id": task["task_id"], "replan": True},
            409,
            "invalid_transition",
        )
        await rejected(baton, "task.replan", {"task_id": "ghost"}, 404, "not_found")
    assert seen == []


async def test_a_repeated_create_gets_its_first_reply_without_the_planner(
    baton: Running, nats_url: str
) -> None:
    async with planner_service(nats_url, baton.prefix, plan=lambda _: answer(seq("a"))):
        first = await baton.client.create_task(task_name="t", msg_id="create-once")
    before = baton.notifications()
    again = await baton.client.create_task(task_name="t", msg_id="create-once")
    assert again == first
    assert baton.notifications() == before
