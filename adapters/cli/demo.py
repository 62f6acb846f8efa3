"""``baton demo``: a small dependency plan run to completion, step by step, as a worker would."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from baton.adapters import render
from baton.adapters.cli.common import (
    EXIT_OK,
    EXIT_SERVER,
    EXIT_USAGE,
    CliError,
    Output,
    run_async,
    silence_stdout,
)

if TYPE_CHECKING:
    from baton.adapters.client import BatonClient


DEMO_TASK_NAME = "demo report"


DEMO_PLAN: dict[str, Any] = {
    "goal": "A short report on a data set",
    "steps": [
        {
            "step_name": "fetch",
            "description": "Fetch the data set",
            "action_instruction": "Download the rows to the workspace",
            "depends_on": [],
        },
        {
            "step_name": "summarise",
            "description": "Summarise the rows",
            "depends_on": ["fetch"],
        },
        {
            "step_name": "extract",
            "description": "Extract the key figures",
            "depends_on": ["fetch"],
        },
        {
            "step_name": "report",
            "description": "Write the report from the summary and the figures",
            "validation_instruction": "The report cites every figure",
            "depends_on": ["summarise", "extract"],
        },
    ],
}


DEMO_RESULTS: dict[str, Any] = {
    "fetch": {"rows": 1200, "source": "demo.csv"},
    "summarise": "Sales grew in every region; the north grew fastest.",
    "extract": {"growth_pct": 12.5, "best_region": "north"},
    "report": "report.md written (3 sections)",
}


def cmd_demo(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> int:
        say = (lambda text: None) if out.as_json else out.line
        stale = await client.active(session_id=args.session)
        if stale is not None:
            if stale.get("task_name") != DEMO_TASK_NAME:
                raise CliError(
                    f"error: session {args.session!r} is busy with task {stale['task_id']}; "
                    "pass another --session",
                    EXIT_USAGE,
                )
            await client.cancel_task(task_id=stale["task_id"], reason="a new demo started")
            say(f"cancelled the unfinished demo task {stale['task_id']}")
        view = await client.create_task(
            task_name=DEMO_TASK_NAME,
            task_instruction="Fetch a data set, summarise it and extract figures, then report.",
            session_id=args.session,
            plan=DEMO_PLAN,
        )
        task_id = view["task_id"]
        try:
            return await _drive(args, client, out, task_id)
        except BrokenPipeError:
            # `baton demo | head -1`: the reader is gone. End the demo's task rather than leave
            # it half-done, and exit quietly, as `head` expects of a writer.
            from baton.adapters.client import BatonRequestError

            silence_stdout()
            with contextlib.suppress(BatonRequestError):
                await client.cancel_task(task_id=task_id, reason="the demo's output was closed")
            return EXIT_OK

    return run_async(args, body)


async def _drive(args: argparse.Namespace, client: BatonClient, out: Output, task_id: str) -> int:
    """Starts the demo task, then claims and completes its steps until none is left."""
    style = out.style
    say = (lambda text: None) if out.as_json else out.line
    say(f"created task {style.paint(task_id, 'bold')}: fetch -> (summarise, extract) -> report")
    say(
        style.paint(
            f"  watch it live in another shell: baton watch {task_id}"
            f" (or baton watch --session {args.session})",
            "dim",
        )
    )
    await asyncio.sleep(args.pause)
    started = await client.start_task(task_id=task_id)
    say(f"started: trigger scheduled for step {started['step']['step_name']}")
    while True:
        await asyncio.sleep(args.pause)
        claimed: list[dict[str, Any]] = []
        while True:  # claim every step that is ready now (parallel branches)
            reply = await client.claim_step(task_id=task_id, worker=args.worker)
            if reply["step"] is None:
                status = reply["queue_status"]
                break
            claimed.append(reply["step"])
            say(f"{args.worker} claimed {style.paint(reply['step']['step_name'], 'cyan')}")
        if not claimed:
            break
        for step in claimed:
            await asyncio.sleep(args.pause)
            name = step["step_name"]
            done = await client.complete_step(
                task_id=task_id, step_id=step["step_id"], result=DEMO_RESULTS.get(name, "ok")
            )
            say(
                f"{style.paint(style.glyph('completed'), 'green')} {name} completed "
                f"with {render.short(done.get('result'), 60)}"
            )
    final = await client.task(task_id=task_id)
    for _ in range(50):  # the projection may be a moment behind the last command
        if final.get("status") not in ("running", "queued"):
            break
        await asyncio.sleep(0.1)
        final = await client.task(task_id=task_id)
    if out.as_json:
        out.json(final)
    else:
        out.line()
        out.line(render.task_tree(final, style))
    if final.get("status") != "completed":
        raise CliError(
            f"error: the demo task ended as {final.get('status')} (queue {status})", EXIT_SERVER
        )
    return EXIT_OK
