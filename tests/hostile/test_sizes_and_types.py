"""Issue 11 items 1, 2 (by expansion), 3, 4, 7 (scope), 10 and 11, over NATS against a running Baton
on the session's nats-server (default 1 MiB ``max_payload``).

Each request here is small or legal; what it would make Baton produce (events, views, replies,
progress messages) is what is bounded: accepted commands produce what fits, anything that would
not is a 413 before anything is appended, and every query answers within a message."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest

from baton.adapters import contract
from baton.domain.limits import MAX_REQUEST_BYTES, MAX_STEPS
from tests.integration.nats_support import Running, StartBaton, rejected

MIB = 1024 * 1024


@pytest.fixture
async def baton(start_baton: StartBaton) -> Running:
    return await start_baton(timeout=30)


async def progress_of(baton: Running, task_id: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` progress messages of a task, from its stream."""
    js = baton.nc.jetstream()
    subject = contract.progress_subject(baton.prefix, task_id)
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        got = []
        for _ in range(count):
            msg = await sub.next_msg(timeout=15)
            got.append(json.loads(msg.data))
        return got
    finally:
        await sub.unsubscribe()


# -- item 1: one accepted create must not stop progress publication ----------------------------


async def test_a_plan_at_the_request_limit_is_accepted_or_refused_and_progress_goes_on(
    baton: Running,
) -> None:
    name = "n" * 200
    steps = [{"step_name": f"{i:04d}{name}", "description": "d" * 280} for i in range(MAX_STEPS)]
    body = json.dumps({"task_name": "big", "plan": {"steps": steps}}).encode()
    assert len(body) < MAX_REQUEST_BYTES
    msg = await baton.nc.request(f"{baton.prefix}.task.create", body, timeout=30)
    reply = json.loads(msg.data)
    if "error" in reply:
        assert reply["error"]["code"] == 413  # what would not fit is refused before appending
    else:
        created = await progress_of(baton, reply["task_id"], 2)
        assert created[0]["type"] == "Created"
    # Whatever happened to it, a later small task's events are published.
    small = await baton.client.create_task(task_name="after", plan={"steps": [{"step_name": "a"}]})
    assert (await progress_of(baton, small["task_id"], 1))[0]["type"] == "Created"


# -- item 3: context stored once ---------------------------------------------------------------


async def test_a_big_context_is_stored_once_in_the_views(baton: Running) -> None:
    context = {"blob": "c" * 100_000}
    steps = [{"step_name": f"s{i}"} for i in range(MAX_STEPS)]
    view = await baton.client.create_task(
        task_name="ctx", plan={"steps": steps, "context": context}
    )
    assert len(json.dumps(view)) < 1 * MIB  # the reply: once, not per step
    await baton.client.add_context(task_id=view["task_id"], key="more", value="m" * 100_000)
    shown = await baton.client.task(task_id=view["task_id"])
    assert shown["context"]["more"] == "m" * 100_000
    views = baton.settings.data_dir / "views.sqlite"
    with sqlite3.connect(views) as db:  # every stored JSON column, together
        stored = sum(
            db.execute(f"SELECT COALESCE(SUM(LENGTH({column})), 0) FROM {table}").fetchone()[0]
            for table, column in (
                ("baton_tasks", "context_json"),
                ("baton_task_steps", "step_json"),
                ("baton_ready_steps", "step_json"),
            )
        )
    assert stored < 2 * MIB, stored  # 0.1 wrote ~200 MB here


# -- item 4: the step limit holds per task, history included ------------------------------------


async def test_replans_cannot_grow_a_task_past_the_step_limit(baton: Running) -> None:
    def batch(tag: str, size: int) -> dict[str, Any]:
        return {"steps": [{"step_name": f"{tag}{i}", "depends_on": []} for i in range(size)]}

    view = await baton.client.create_task(task_name="grow", plan=batch("a", 400))
    refused = None
    for round_ in range(6):
        body = {"task_id": view["task_id"], "plan": batch(f"r{round_}-", 400)}
        msg = await baton.nc.request(
            f"{baton.prefix}.task.replan", json.dumps(body).encode(), timeout=30
        )
        reply = json.loads(msg.data)
        if "error" in reply:
            refused = reply["error"]
            break
    assert refused is not None and refused["code"] == 413
    shown = await baton.client.task(task_id=view["task_id"])
    assert len(shown["steps"]) <= MAX_STEPS


# -- item 2 by expansion: every query reply fits ---------------------------------------------------


async def test_a_400_kb_context_does_not_stop_the_queue_for_everyone(baton: Running) -> None:
    wide = {"steps": [{"step_name": f"s{i}", "depends_on": []} for i in range(10)]}
    await baton.client.create_task(task_name="fat", plan={**wide, "context": {"x": "x" * 400_000}})
    for _ in range(3):
        await baton.client.create_task(task_name="thin", plan=wide)
    page = await baton.client.queue(limit=1000)
    assert len(page["steps"]) >= 30


async def test_pages_of_tasks_are_cut_by_bytes_and_go_on_with_a_cursor(baton: Running) -> None:
    name = "\U0001f600" * 256  # 1 KiB of UTF-8 per name
    session = "emoji"
    created = await asyncio.gather(
        *[
            baton.client.create_task(
                task_name=name, session_id=session, plan={"steps": [{"step_name": "a"}]}
            )
            for _ in range(40)
        ]
    )
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = await baton.client.tasks(session_id=session, limit=1000, after=after)
        pages += 1
        seen += [t["task_id"] for t in page["tasks"]]
        after = page["cursor"]
        if after is None:
            break
    assert sorted(seen) == sorted(t["task_id"] for t in created)
    assert pages >= 1


# -- item 7: idempotency is scoped by subject -------------------------------------------------


async def test_a_command_id_reused_on_another_subject_is_409_and_says_so(baton: Running) -> None:
    headers = {"Nats-Msg-Id": "reused-id"}
    body = json.dumps({"task_name": "t", "plan": {"steps": [{"step_name": "a"}]}}).encode()
    first = await baton.nc.request(f"{baton.prefix}.task.create", body, timeout=10, headers=headers)
    task_id = json.loads(first.data)["task_id"]
    again = await baton.nc.request(
        f"{baton.prefix}.step.claim",
        json.dumps({"task_id": task_id}).encode(),
        timeout=10,
        headers=headers,
    )
    error = json.loads(again.data)["error"]
    assert error["code"] == 409 and error["reason"] == "command_id_reused"
    assert "CreateTask" in error["message"]


# -- item 10: a sequential plan never has two current steps -------------------------------------


async def test_a_sequential_plan_never_has_two_current_steps(baton: Running) -> None:
    view = await baton.client.create_task(
        task_name="seq", plan={"steps": [{"step_name": n} for n in "abc"]}
    )
    b = view["steps"][1]["step_id"]
    await baton.client.skip_step(task_id=view["task_id"], step_id=b)
    first = await baton.client.claim_step(task_id=view["task_id"], worker="w1")
    second = await baton.client.claim_step(task_id=view["task_id"], worker="w2")
    assert first["step"]["step_name"] == "a"
    assert second["step"] is None
    shown = await baton.client.task(task_id=view["task_id"])
    assert [s["step_name"] for s in shown["steps"] if s["status"] == "current"] == ["a"]


# -- item 11: strict numbers, duplicate keys, huge cursors ---------------------------------------


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        ("task.create", {"task_name": "t", "priority": "5", "plan": {"steps": []}}),
        ("task.create", {"task_name": "t", "priority": True, "plan": {"steps": []}}),
        ("task.start", {"task_id": "t", "delay_s": "1"}),
        ("step.claim", {"task_id": "t", "lease_s": "30"}),
        ("query.history", {"task_id": "t", "version": 2**63}),
        ("query.history", {"task_id": "t", "version": 10**30}),
    ],
)
async def test_numbers_of_the_wrong_type_or_range_are_400(
    baton: Running, subject: str, body: dict[str, Any]
) -> None:
    await rejected(baton, subject, body, 400, "invalid_request")


async def test_duplicate_keys_are_400(baton: Running) -> None:
    body = b'{"task_name": "a", "task_name": "b", "plan": {"steps": [{"step_name": "x"}]}}'
    error = await rejected(baton, "task.create", body, 400, "invalid_request")
    assert "task_name" in error["message"]


@pytest.mark.parametrize("after", [str(2**63), str(10**40), "-1", "x"])
async def test_a_huge_or_foreign_cursor_is_400_not_500(baton: Running, after: str) -> None:
    for subject, extra in (("query.tasks", {}), ("query.queue", {})):
        await rejected(baton, subject, {"after": after, **extra}, 400, "invalid_request")
