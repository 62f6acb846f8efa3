"""Every query subject of the contract, and the $SRV discovery verbs, over a real nats-server."""

from __future__ import annotations

import json
from typing import Any

from baton.adapters.messages import COMMANDS, QUERIES
from tests.integration.nats_support import Running
from tests.plans import seq

# -- query.active ------------------------------------------------------------------------------


async def test_active_is_the_sessions_running_task_or_null(baton: Running) -> None:
    assert await baton.client.active(session_id="nobody") is None
    first = await baton.client.create_task(task_name="a", session_id="s1", plan=seq("x"))
    await baton.client.create_task(task_name="b", session_id="s1", plan=seq("x"))
    active = await baton.client.active(session_id="s1")
    assert active is not None
    assert active["task_id"] == first["task_id"]
    assert active["status"] == "running"
    await baton.client.cancel_task(task_id=first["task_id"])
    after = await baton.client.active(session_id="s1")
    assert after is not None and after["task_name"] == "b"


# -- query.task --------------------------------------------------------------------------------


async def test_task_reads_its_own_writes(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    await baton.client.next_step(task_id=task["task_id"])
    view = await baton.client.task(task_id=task["task_id"])
    assert view["current_step"]["step_name"] == "b"
    assert view["trigger"]["step_id"] == view["current_step"]["step_id"]
    assert view["version"] > task["version"]


# -- query.tasks -------------------------------------------------------------------------------


async def test_tasks_pages_with_a_cursor_and_filters(baton: Running) -> None:
    created = [
        await baton.client.create_task(task_name=f"t{i}", session_id=f"page-{i}", plan=seq("a"))
        for i in range(5)
    ]
    await baton.client.cancel_task(task_id=created[0]["task_id"])
    seen: list[str] = []
    after = None
    while True:
        page = await baton.client.tasks(limit=2, after=after)
        assert len(page["tasks"]) <= 2
        seen += [t["task_id"] for t in page["tasks"]]
        after = page["cursor"]
        if after is None:
            break
    assert sorted(seen) == sorted(t["task_id"] for t in created)
    running = await baton.client.tasks(status="running")
    assert len(running["tasks"]) == 4
    assert {t["status"] for t in running["tasks"]} == {"running"}
    cancelled = await baton.client.tasks(status="cancelled", session_id="page-0")
    assert [t["task_id"] for t in cancelled["tasks"]] == [created[0]["task_id"]]


# -- query.queue -------------------------------------------------------------------------------


async def test_queue_lists_ready_steps_most_urgent_first_and_pending_triggers(
    baton: Running,
) -> None:
    low = await baton.client.create_task(
        task_name="low", session_id="q1", priority=9, plan=seq("a")
    )
    high = await baton.client.create_task(
        task_name="high", session_id="q2", priority=1, plan=seq("a")
    )
    await baton.client.start_task(task_id=low["task_id"], delay_s=3600)
    queue = await baton.client.queue()
    assert [s["task_id"] for s in queue["steps"]] == [high["task_id"], low["task_id"]]
    assert [t["task_id"] for t in queue["triggers"]] == [low["task_id"]]
    only = await baton.client.queue(session_id="q2", limit=5)
    assert [s["task_id"] for s in only["steps"]] == [high["task_id"]]
    assert only["triggers"] == []


# -- query.history -----------------------------------------------------------------------------


async def test_history_lists_every_event_in_order_and_a_past_version(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    await baton.client.next_step(task_id=task["task_id"])
    await baton.client.next_step(task_id=task["task_id"])
    history = await baton.client.history(task_id=task["task_id"])
    assert history["task_id"] == task["task_id"]
    events = history["events"]
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "Created"
    assert all(e["display_message"] for e in events)
    assert {"type", "version", "timestamp", "data", "display_message"} <= set(events[0])
    past = await baton.client.history(task_id=task["task_id"], version=task["version"])
    assert past["version"] == task["version"]
    assert past["task"]["status"] == "running"
    assert past["task"]["current_step"]["step_name"] == "a"


# -- discovery -------------------------------------------------------------------------------


async def _replies(baton: Running, subject: str) -> list[dict[str, Any]]:
    """Every reply to a $SRV request within half a second (other services may answer too)."""
    inbox = baton.nc.new_inbox()
    sub = await baton.nc.subscribe(inbox)
    await baton.nc.publish(subject, b"", reply=inbox)
    replies = []
    try:
        while True:
            msg = await sub.next_msg(timeout=0.5)
            replies.append(json.loads(msg.data))
    except TimeoutError:
        pass
    finally:
        await sub.unsubscribe()
    return replies


async def test_srv_info_lists_every_endpoint_under_the_prefix(baton: Running) -> None:
    infos = [
        i
        for i in await _replies(baton, "$SRV.INFO.baton")
        if i.get("metadata", {}).get("prefix") == baton.prefix
    ]
    assert len(infos) == 1
    info = infos[0]
    assert info["name"] == "baton"
    assert info["version"] == "0.1.0"
    subjects = {e["subject"] for e in info["endpoints"]}
    assert subjects == {f"{baton.prefix}.{s}" for s in [*COMMANDS, *QUERIES]}
    assert {e["queue_group"] for e in info["endpoints"]} == {"baton"}


async def test_srv_ping_and_stats_answer(baton: Running) -> None:
    pings = await _replies(baton, "$SRV.PING.baton")
    assert any(p["name"] == "baton" for p in pings)
    ours = [
        s
        for s in await _replies(baton, "$SRV.STATS.baton")
        if s.get("metadata", {}).get("prefix") == baton.prefix
    ]
    assert len(ours) == 1
    assert len(ours[0]["endpoints"]) == len(COMMANDS) + len(QUERIES)
