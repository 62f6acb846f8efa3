"""Every command subject of the contract, through the typed client, against a real nats-server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from baton.adapters.bootstrap import serve
from baton.adapters.client import BatonClient
from tests.integration.nats_support import Running, settings_for
from tests.plans import seq

# -- task.create -------------------------------------------------------------------------------


async def test_create_returns_the_task_view_with_its_first_step_current(baton: Running) -> None:
    task = await baton.client.create_task(
        task_name="Write report", task_instruction="about NATS", plan=seq("outline", "draft")
    )
    assert task["status"] == "running"
    assert task["task_name"] == "Write report"
    assert task["task_instruction"] == "about NATS"
    assert task["session_id"] == task["task_id"]
    assert task["task_id"].startswith("write-report-")
    assert task["current_step"]["step_name"] == "outline"
    assert [s["status"] for s in task["steps"]] == ["current", "pending"]
    assert task["steps"][1]["depends_on"] == ["outline"]
    assert task["workspace"] and Path(task["workspace"]).is_dir()


async def test_create_in_a_busy_session_queues_the_task(baton: Running) -> None:
    first = await baton.client.create_task(task_name="one", session_id="agent-1", plan=seq("a"))
    second = await baton.client.create_task(task_name="two", session_id="agent-1", plan=seq("a"))
    assert first["status"] == "running"
    assert second["status"] == "queued"
    assert "current_step" not in second
    ended = await baton.client.complete_task(task_id=first["task_id"])
    assert ended["status"] == "completed"
    started = await baton.client.task(task_id=second["task_id"])
    assert started["status"] == "running"
    assert started["current_step"]["step_name"] == "a"


# -- task.start / task.next ----------------------------------------------------------------------


async def test_start_schedules_a_trigger_for_the_current_step(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"), priority=3)
    reply = await baton.client.start_task(task_id=task["task_id"], delay_s=30, priority=1)
    assert reply["status"] == "queued"
    assert reply["step"]["step_name"] == "a"
    trigger = reply["trigger"]
    assert trigger["task_id"] == task["task_id"]
    assert trigger["step_id"] == reply["step"]["step_id"]
    assert trigger["session_id"] == task["session_id"]
    assert trigger["priority"] == 1
    assert trigger["payload"]["parent_action_id"] == reply["step"]["parent_action_id"]
    assert trigger["fire_at"] > task["created_at"] + 29


async def test_next_advances_step_by_step_until_the_task_completes(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    first = await baton.client.next_step(task_id=task["task_id"])
    assert first["status"] == "queued"
    assert first["step"]["step_name"] == "b"
    assert first["trigger"]["step_id"] == first["step"]["step_id"]
    last = await baton.client.next_step(task_id=task["task_id"])
    assert last == {"status": "completed", "step": None, "trigger": None}
    view = await baton.client.task(task_id=task["task_id"])
    assert view["status"] == "completed"
    assert [s["status"] for s in view["steps"]] == ["completed", "completed"]


async def test_next_with_nothing_ready_answers_no_next_step(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    current = task["current_step"]
    await baton.client.fail_step(task_id=task["task_id"], step_id=current["step_id"], message="x")
    reply = await baton.client.next_step(task_id=task["task_id"])
    assert reply["status"] == "no_next_step"
    assert reply["step"] is None


async def test_next_with_a_plan_revises_the_plan_first(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    reply = await baton.client.next_step(task_id=task["task_id"], plan=seq("a", "c"))
    assert reply["status"] == "queued"
    assert reply["step"]["step_name"] == "c"
    view = await baton.client.task(task_id=task["task_id"])
    assert {s["step_name"]: s["status"] for s in view["steps"]} == {
        "a": "completed",
        "b": "cancelled",
        "c": "current",
    }


# -- task.replan -------------------------------------------------------------------------------


async def test_replan_reports_added_changed_and_removed_steps(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b", "c"))
    new_plan = {
        "steps": [
            {"step_name": "a", "description": "do a"},
            {"step_name": "b", "description": "do b, differently"},
            {"step_name": "d", "description": "do d"},
        ]
    }
    view = await baton.client.replan_task(task_id=task["task_id"], plan=new_plan)
    assert view["diff"] == {"added": ["d"], "changed": ["b"], "removed": ["c"]}
    by_name = {s["step_name"]: s for s in view["steps"]}
    assert by_name["c"]["status"] == "cancelled"
    assert by_name["b"]["description"] == "do b, differently"
    assert by_name["d"]["status"] == "pending"


async def test_replan_with_advance_next_advances_the_task(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    view = await baton.client.replan_task(
        task_id=task["task_id"], plan=seq("a", "b", "c"), advance_next=True
    )
    assert view["diff"]["added"] == ["c"]
    assert view["current_step"]["step_name"] == "b"
    assert view["advance"]["status"] == "queued"


# -- task.complete / fail / cancel ----------------------------------------------------------------


async def test_complete_ends_the_task_and_completes_its_current_step(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    view = await baton.client.complete_task(task_id=task["task_id"], message="good enough")
    assert view["status"] == "completed"
    assert [s["status"] for s in view["steps"]] == ["completed", "pending"]
    assert view["steps"][1]["ready"] is False


async def test_fail_ends_the_task_in_error_and_fails_its_current_step(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    view = await baton.client.fail_task(task_id=task["task_id"], message="broken")
    assert view["status"] == "error"
    assert view["steps"][0]["status"] == "failed"


async def test_cancel_cancels_every_pending_step_and_withdraws_the_trigger(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b", "c"))
    await baton.client.start_task(task_id=task["task_id"], delay_s=60)
    view = await baton.client.cancel_task(task_id=task["task_id"], reason="not needed")
    assert view["status"] == "cancelled"
    assert [s["status"] for s in view["steps"]] == ["cancelled"] * 3
    assert "trigger" not in view


# -- task.context ------------------------------------------------------------------------------


async def test_context_is_added_to_the_task_once_and_a_claimed_step_sees_it(
    baton: Running,
) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    view = await baton.client.add_context(
        task_id=task["task_id"], key="repo", value={"url": "git://x", "branch": None}
    )
    assert view["context"]["repo"] == {"url": "git://x", "branch": None}
    assert all("repo" not in s["context"] for s in view["steps"])  # once, at the top
    claimed = await baton.client.claim_step(task_id=task["task_id"])
    assert claimed["step"]["context"]["repo"] == {"url": "git://x", "branch": None}
    nulled = await baton.client.add_context(task_id=task["task_id"], key="empty", value=None)
    assert nulled["context"]["empty"] is None


# -- step.claim --------------------------------------------------------------------------------


async def test_claim_hands_out_the_current_step_then_reports_blocked(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", session_id="s-claim", plan=seq("a", "b"))
    claimed = await baton.client.claim_step(session_id="s-claim", worker="w1")
    assert claimed["queue_status"] == "in_progress"
    assert claimed["step"]["step_name"] == "a"
    assert claimed["step"]["claimed_by"] == "w1"
    nothing = await baton.client.claim_step(session_id="s-claim", worker="w2")
    assert nothing == {"step": None, "queue_status": "blocked"}
    step_id = claimed["step"]["step_id"]
    await baton.client.complete_step(task_id=task["task_id"], step_id=step_id)
    ready = await baton.client.claim_step(task_id=task["task_id"], worker="w2")
    assert ready["step"]["step_name"] == "b"
    assert ready["step"]["status"] == "current"


async def test_claim_reports_failed_and_done(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", session_id="s-fd", plan=seq("a"))
    step_id = task["current_step"]["step_id"]
    await baton.client.fail_step(task_id=task["task_id"], step_id=step_id, message="no")
    assert (await baton.client.claim_step(session_id="s-fd"))["queue_status"] == "failed"
    await baton.client.skip_step(task_id=task["task_id"], step_id=step_id)
    assert (await baton.client.claim_step(session_id="s-fd"))["queue_status"] == "done"


async def test_claim_across_every_session_uses_the_projections(baton: Running) -> None:
    await baton.client.create_task(task_name="low", session_id="s-low", priority=9, plan=seq("a"))
    urgent = await baton.client.create_task(
        task_name="urgent", session_id="s-urgent", priority=1, plan=seq("x")
    )
    claimed = await baton.client.claim_step(worker="any")
    assert claimed["queue_status"] == "in_progress"
    assert claimed["step"]["task_id"] == urgent["task_id"]


# -- step.complete / fail / skip / retry ----------------------------------------------------------


async def test_step_complete_passes_its_result_to_its_dependents(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    step_id = task["current_step"]["step_id"]
    reply = await baton.client.complete_step(
        task_id=task["task_id"], step_id=step_id, result={"pages": 3}
    )
    assert reply["status"] == "completed"
    assert reply["result"] == {"pages": 3}
    assert reply["task_status"] == "running"
    view = await baton.client.task(task_id=task["task_id"])
    assert view["steps"][1]["context"]["a"] == {"pages": 3}
    assert view["steps"][1]["ready"] is True
    assert "current_step" not in view


async def test_step_fail_then_retry_then_skip(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    step_id = task["current_step"]["step_id"]
    failed = await baton.client.fail_step(task_id=task["task_id"], step_id=step_id, message="oops")
    assert failed["status"] == "failed"
    assert failed["failure_message"] == "oops"
    assert failed["task_status"] == "running"
    retried = await baton.client.retry_step(task_id=task["task_id"], step_id=step_id)
    assert retried["status"] == "pending"
    skipped = await baton.client.skip_step(task_id=task["task_id"], step_id=step_id, message="meh")
    assert skipped["status"] == "skipped"
    last = task["steps"][1]["step_id"]
    done = await baton.client.complete_step(task_id=task["task_id"], step_id=last)
    assert done["task_status"] == "completed"


# -- concurrency and the process around it -----------------------------------------------------


async def test_commands_for_different_tasks_proceed_concurrently(baton: Running) -> None:
    tasks = await asyncio.gather(
        *(baton.client.create_task(task_name=f"t{i}", plan=seq("a", "b")) for i in range(30))
    )
    replies = await asyncio.gather(*(baton.client.next_step(task_id=t["task_id"]) for t in tasks))
    assert {r["status"] for r in replies} == {"queued"}
    finals = await asyncio.gather(*(baton.client.next_step(task_id=t["task_id"]) for t in tasks))
    assert {r["status"] for r in finals} == {"completed"}
    for task in tasks:
        view = await baton.client.task(task_id=task["task_id"])
        assert view["status"] == "completed"


async def test_serve_runs_until_its_stop_event_and_answers_meanwhile(
    nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(nats_url, tmp_path / "data")
    ready, stop = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(serve(settings, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with await BatonClient.connect(nats_url, prefix=settings.subject_prefix) as client:
            task = await client.create_task(task_name="served", plan=seq("a"))
            assert (await client.next_step(task_id=task["task_id"]))["status"] == "completed"
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)
