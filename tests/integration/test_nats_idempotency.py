"""Idempotent commands over NATS: a repeat of a ``Nats-Msg-Id`` header or ``command_id`` field
gets the first reply and changes nothing, also after a restart; failures are not remembered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from baton.adapters.client import BatonRequestError
from tests.integration.nats_support import Running, running_baton, settings_for
from tests.plans import seq


async def test_a_repeated_msg_id_gets_the_first_reply_and_appends_nothing(baton: Running) -> None:
    first = await baton.client.create_task(task_name="t", plan=seq("a", "b"), msg_id="m-1")
    before = baton.notifications()
    again = await baton.client.create_task(task_name="t", plan=seq("a", "b"), msg_id="m-1")
    assert again == first
    assert baton.notifications() == before
    assert len((await baton.client.tasks())["tasks"]) == 1


async def test_a_repeated_command_id_gets_the_first_reply(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b", "c"))
    first = await baton.client.next_step(task_id=task["task_id"], command_id="next-1")
    before = baton.notifications()
    again = await baton.client.next_step(task_id=task["task_id"], command_id="next-1")
    assert again == first
    assert baton.notifications() == before
    view = await baton.client.task(task_id=task["task_id"])
    assert view["current_step"]["step_name"] == "b"


async def test_the_header_wins_over_the_field(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b", "c"))
    first = await baton.client.next_step(
        task_id=task["task_id"], msg_id="header-id", command_id="field-id"
    )
    # Same header, another field: a repeat.
    again = await baton.client.next_step(
        task_id=task["task_id"], msg_id="header-id", command_id="other-field"
    )
    assert again == first
    # The field alone was never the command's id: this is a new command.
    second = await baton.client.next_step(task_id=task["task_id"], command_id="field-id")
    assert second["step"]["step_name"] == "c"


async def test_the_same_msg_id_sent_concurrently_is_applied_once(baton: Running) -> None:
    replies = await asyncio.gather(
        *(baton.client.create_task(task_name="t", plan=seq("a"), msg_id="burst") for _ in range(20))
    )
    assert len({json.dumps(r, sort_keys=True) for r in replies}) == 1
    assert len((await baton.client.tasks())["tasks"]) == 1


async def test_a_failed_command_is_not_remembered_so_it_can_be_retried(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    step_b = task["steps"][1]["step_id"]
    with pytest.raises(BatonRequestError) as caught:
        await baton.client.complete_step(task_id=task["task_id"], step_id=step_b, msg_id="done-b")
    assert caught.value.code == 409
    await baton.client.next_step(task_id=task["task_id"])
    done = await baton.client.complete_step(
        task_id=task["task_id"], step_id=step_b, msg_id="done-b"
    )
    assert done["status"] == "completed"
    assert done["task_status"] == "completed"


async def test_repeats_are_recognised_after_a_restart_on_the_same_data_dir(
    nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(nats_url, tmp_path / "data")
    async with running_baton(settings) as baton:
        task = await baton.client.create_task(task_name="t", plan=seq("a", "b"), msg_id="c-1")
        advanced = await baton.client.next_step(task_id=task["task_id"], msg_id="n-1")
    async with running_baton(settings) as baton:
        before = baton.notifications()
        assert (
            await baton.client.create_task(task_name="t", plan=seq("a", "b"), msg_id="c-1") == task
        )
        assert await baton.client.next_step(task_id=task["task_id"], msg_id="n-1") == advanced
        assert baton.notifications() == before
        view = await baton.client.task(task_id=task["task_id"])
        assert view["current_step"]["step_name"] == "b"
