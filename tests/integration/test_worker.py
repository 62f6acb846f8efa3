"""Workers that can die (#14), over NATS against a running Baton: leases lapse and the step is
handed out again, a stale holder is fenced off, heartbeats keep a lease, retry policies hand a
step out a bounded number of times; the worker loop, its trigger consumer and ``baton work``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonRequestError
from baton.adapters.worker import consume_triggers, work
from tests.integration.nats_support import Running, running_baton, settings_for
from tests.plans import seq

BATON = str(Path(sys.executable).parent / "baton")


def graph(*names: str, **policy: Any) -> dict[str, Any]:
    """Independent steps (each claimable at once), each with ``policy``."""
    return {
        "steps": [
            {"step_name": n, "description": f"do {n}", "depends_on": [], **policy} for n in names
        ]
    }


async def claim_within(baton: Running, task_id: str, seconds: float) -> dict[str, Any]:
    """Claims until a step is handed out; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        reply = await baton.client.claim_step(task_id=task_id, worker="second", lease_s=30)
        if reply["step"] is not None:
            return dict(reply["step"])
        assert time.monotonic() < deadline, f"nothing handed out within {seconds} s: {reply}"
        await asyncio.sleep(0.1)


async def events_of(baton: Running, task_id: str) -> list[dict[str, Any]]:
    return list((await baton.client.history(task_id=task_id))["events"])


# -- leases, fencing, heartbeats, retry policies ---------------------------------------------


async def test_a_lapsed_lease_hands_the_step_to_the_next_claimant_and_fences_the_first(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=graph("a", max_attempts=2))
        first = (await baton.client.claim_step(task_id=task["task_id"], lease_s=1))["step"]
        assert first["claim_id"] and first["lease_expires_at"] <= time.time() + 1.5
        started = time.monotonic()
        second = await claim_within(baton, task["task_id"], 5)
        assert second["step_id"] == first["step_id"]
        assert second["claim_id"] != first["claim_id"]
        assert 0.5 < time.monotonic() - started < 5
        ids = {"task_id": task["task_id"], "step_id": first["step_id"]}
        with pytest.raises(BatonRequestError) as stale:
            await baton.client.complete_step(**ids, result="late", claim_id=first["claim_id"])
        assert (stale.value.code, stale.value.reason) == (409, "stale_claim")
        done = await baton.client.complete_step(**ids, result="ok", claim_id=second["claim_id"])
        assert done["status"] == "completed" and done["result"] == "ok"
        lapses = [e for e in await events_of(baton, task["task_id"]) if e["type"] == "ClaimExpired"]
        assert [e["data"]["claim_id"] for e in lapses] == [first["claim_id"]]


async def test_heartbeats_every_0_4_s_keep_a_1_s_lease_held(nats_url: str, tmp_path: Path) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=graph("a"))
        step = (await baton.client.claim_step(task_id=task["task_id"], lease_s=1))["step"]
        ids = {"task_id": task["task_id"], "step_id": step["step_id"]}
        until = time.monotonic() + 3.5
        while time.monotonic() < until:
            beat = await baton.client.heartbeat_step(**ids, claim_id=step["claim_id"], lease_s=1)
            assert beat["claim_id"] == step["claim_id"]
            other = await baton.client.claim_step(task_id=task["task_id"], worker="other")
            assert other["step"] is None
            await asyncio.sleep(0.4)
        done = await baton.client.complete_step(**ids, result=1, claim_id=step["claim_id"])
        assert done["status"] == "completed"
        types = [e["type"] for e in await events_of(baton, task["task_id"])]
        assert "ClaimExpired" not in types
        assert types.count("ClaimRenewed") >= 7


async def test_a_step_with_max_attempts_3_is_handed_out_three_times_then_stays_failed(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(
            task_name="t", plan=graph("a", max_attempts=3, retry_delay_s=0)
        )
        claims = []
        for _ in range(3):
            step = await claim_within(baton, task["task_id"], 5)
            claims.append(step["claim_id"])
            await baton.client.fail_step(
                task_id=task["task_id"],
                step_id=step["step_id"],
                message="flaky",
                claim_id=step["claim_id"],
            )
        assert len(set(claims)) == 3
        await asyncio.sleep(1.0)
        nothing = await baton.client.claim_step(task_id=task["task_id"], worker="late")
        assert nothing == {"step": None, "queue_status": "failed"}
        view = await baton.client.task(task_id=task["task_id"])
        assert view["steps"][0]["status"] == "failed"
        assert view["steps"][0]["attempts"] == 3
        types = [e["type"] for e in await events_of(baton, task["task_id"])]
        assert types.count("StepClaimed") == 3
        assert types.count("StepAttemptFailed") == 2 and types.count("StepFailed") == 1


async def test_lapsed_leases_count_as_attempts(nats_url: str, tmp_path: Path) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(
            task_name="t", plan=graph("a", max_attempts=2, retry_delay_s=0)
        )
        await baton.client.claim_step(task_id=task["task_id"], lease_s=1)
        await claim_within(baton, task["task_id"], 5)  # the lapse was attempt 1
        view = await baton.client.task(task_id=task["task_id"])
        assert view["steps"][0]["attempts"] == 2


# -- the worker loop -------------------------------------------------------------------------


async def test_the_worker_fails_a_step_whose_handler_raises(nats_url: str, tmp_path: Path) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))

        async def handler(step: dict[str, Any]) -> Any:
            raise RuntimeError(f"cannot do {step['step_name']}")

        report = await work(
            baton.client, handler, task_id=task["task_id"], lease_s=2, until_done=True
        )
        assert (report.claimed, report.completed, report.failed) == (1, 0, 1)
        view = await baton.client.task(task_id=task["task_id"])
        assert view["steps"][0]["status"] == "failed"
        assert view["steps"][0]["failure_message"] == "cannot do a"
        assert view["steps"][1]["status"] == "pending"


async def test_handler_results_chain_with_claim_next_to_finish_a_plan(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(
            task_name="t", session_id="chain", plan=seq("a", "b", "c")
        )
        seen: list[str] = []

        async def handler(step: dict[str, Any]) -> Any:
            seen.append(step["step_name"])
            return {"did": step["step_name"], "after": sorted(step["context"])}

        report = await work(
            baton.client, handler, session_id="chain", lease_s=2, worker="w1", until_done=True
        )
        assert seen == ["a", "b", "c"]
        assert (report.claimed, report.completed, report.failed) == (3, 3, 0)
        view = await baton.client.task(task_id=task["task_id"])
        assert [s["result"]["did"] for s in view["steps"]] == ["a", "b", "c"]
        assert {s["claimed_by"] for s in view["steps"]} == {"w1"}
        # Claimed once by step.claim, then twice by the completions before them (claim_next).
        events = await events_of(baton, task["task_id"])
        claimed = [e["version"] for e in events if e["type"] == "StepClaimed"]
        completed = [e["version"] for e in events if e["type"] == "StepCompleted"]
        assert len(claimed) == 3 and all(
            c < k for c, k in zip(completed, claimed[1:], strict=False)
        )


async def test_a_worker_runs_several_steps_at_once_with_concurrency(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=graph("a", "b", "c", "d"))
        running = 0
        most = 0

        async def handler(step: dict[str, Any]) -> Any:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.3)
            running -= 1
            return step["step_name"]

        report = await work(
            baton.client, handler, task_id=task["task_id"], concurrency=4, until_done=True
        )
        assert report.completed == 4 and most >= 2
        view = await baton.client.task(task_id=task["task_id"])
        assert view["status"] == "completed"


async def test_a_worker_whose_claim_is_taken_away_cancels_its_handler_and_drops_the_step(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=graph("a"))
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def handler(step: dict[str, Any]) -> Any:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        stop = asyncio.Event()
        running = asyncio.create_task(
            work(baton.client, handler, task_id=task["task_id"], lease_s=0.9, stop=stop)
        )
        await asyncio.wait_for(started.wait(), 5)
        claimed = (await baton.client.task(task_id=task["task_id"]))["steps"][0]
        # An operator fails the step by hand (no claim id): the worker's claim is gone.
        await baton.client.fail_step(task_id=task["task_id"], step_id=claimed["step_id"])
        await asyncio.wait_for(cancelled.wait(), 5)
        stop.set()
        report = await asyncio.wait_for(running, 5)
        assert (report.claimed, report.completed, report.dropped) == (1, 0, 1)


async def test_stopping_a_worker_finishes_the_step_in_hand_and_claims_no_more(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
        stop = asyncio.Event()

        async def handler(step: dict[str, Any]) -> Any:
            stop.set()  # asked to stop while this step runs
            await asyncio.sleep(0.2)
            return "done"

        report = await asyncio.wait_for(
            work(baton.client, handler, task_id=task["task_id"], lease_s=2, stop=stop), 10
        )
        assert (report.claimed, report.completed) == (1, 1)
        view = await baton.client.task(task_id=task["task_id"])
        assert [s["status"] for s in view["steps"]] == ["completed", "pending"]
        assert view["steps"][1].get("claimed_by") is None


async def test_cancelling_a_worker_leaves_its_claim_to_lapse(nats_url: str, tmp_path: Path) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=graph("a", max_attempts=2))
        started = asyncio.Event()

        async def handler(step: dict[str, Any]) -> Any:
            started.set()
            await asyncio.sleep(30)

        running = asyncio.create_task(
            work(baton.client, handler, task_id=task["task_id"], lease_s=1)
        )
        await asyncio.wait_for(started.wait(), 5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        again = await claim_within(baton, task["task_id"], 5)
        assert again["attempts"] == 2


# -- triggers --------------------------------------------------------------------------------


async def test_the_trigger_consumer_handles_current_steps_and_skips_stale_triggers(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(
            task_name="t", session_id="trig", plan=seq("a", "b", "c")
        )
        await baton.client.start_task(task_id=task["task_id"])  # a trigger for a
        await asyncio.sleep(1.5)  # published
        await baton.client.next_step(task_id=task["task_id"])  # a done: a trigger for b
        handled: list[str] = []
        skipped: list[tuple[str, str]] = []
        stop = asyncio.Event()

        async def handler(trigger: dict[str, Any], step: dict[str, Any]) -> None:
            handled.append(step["step_name"])
            stop.set()

        report = await asyncio.wait_for(
            consume_triggers(
                baton.client,
                "trig",
                handler,
                durable="w-trig",
                stop=stop,
                on_skip=lambda t, why: skipped.append((t["step_id"], why)),
            ),
            15,
        )
        assert handled == ["b"]
        assert skipped == [(f"{task['task_id']}.0", "its step is completed, no longer current")]
        assert (report.handled, report.skipped) == (1, 1)
        # The same durable consumer goes on after the last trigger it acknowledged.
        await baton.client.next_step(task_id=task["task_id"])  # b done: a trigger for c
        stop.clear()
        handled.clear()
        report = await asyncio.wait_for(
            consume_triggers(baton.client, "trig", handler, durable="w-trig", stop=stop), 15
        )
        assert handled == ["c"] and report.skipped == 0


# -- baton work ----------------------------------------------------------------------------


async def test_baton_work_runs_a_shell_command_per_step_to_finish_a_plan(
    nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(nats_url, tmp_path)
    async with running_baton(settings) as baton:
        task = await baton.client.create_task(
            task_name="t", session_id="shell", plan=seq("a", "b", "c")
        )
        command = (
            'python3 -c "import json, sys; step = json.load(sys.stdin); '
            "print(json.dumps({'name': step['step_name'], 'n': len(step['context'])}))\""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        done = await asyncio.to_thread(
            subprocess.run,
            [BATON, "--nats", nats_url, "--prefix", baton.prefix, "work", "--session", "shell",
             "--lease", "5", "--until-done", "--json", "--", command],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"claimed": 3, "completed": 3, "failed": 0, "dropped": 0}
        view = await baton.client.task(task_id=task["task_id"])
        assert view["status"] == "completed"
        assert [s["result"]["name"] for s in view["steps"]] == ["a", "b", "c"]


async def test_baton_work_fails_a_step_whose_command_exits_non_zero(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=seq("a"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        done = await asyncio.to_thread(
            subprocess.run,
            [BATON, "--nats", nats_url, "--prefix", baton.prefix, "work", "--task",
             task["task_id"], "--until-done", "--", "echo no disk space >&2; exit 3"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 3, done.stderr
        step = (await baton.client.task(task_id=task["task_id"]))["steps"][0]
        assert step["status"] == "failed" and step["failure_message"] == "no disk space"


async def test_the_cli_claims_with_a_lease_heartbeats_and_completes_fenced_claiming_the_next(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        common = ["--nats", nats_url, "--prefix", baton.prefix]

        def baton_cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [BATON, *common, *args], env=env, capture_output=True, text=True, timeout=30
            )

        claimed = await asyncio.to_thread(
            baton_cli, "step", "claim", "--task", task["task_id"], "--lease", "5", "--json"
        )
        step = json.loads(claimed.stdout)["step"]
        assert step["lease_expires_at"] <= time.time() + 5
        target = step["step_id"]
        beat = await asyncio.to_thread(
            baton_cli, "step", "heartbeat", target, "--claim-id", step["claim_id"], "--json"
        )
        assert json.loads(beat.stdout)["claim_id"] == step["claim_id"], beat.stderr
        stale = await asyncio.to_thread(
            baton_cli, "step", "complete", target, "--claim-id", "clm-not-mine"
        )
        assert stale.returncode == 2 and "409 stale_claim" in stale.stderr
        done = await asyncio.to_thread(
            baton_cli, "step", "complete", target, "--claim-id", step["claim_id"],
            "--result", "ok", "--claim-next", "--worker", "cli", "--json",
        )  # fmt: skip
        reply = json.loads(done.stdout)
        assert reply["status"] == "completed"
        assert reply["next"]["step"]["step_name"] == "b"
        assert reply["next"]["step"]["claimed_by"] == "cli"
