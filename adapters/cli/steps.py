"""``baton step claim|complete|fail|skip|retry``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from baton.adapters import render
from baton.adapters.cli.common import Output, run_async
from baton.adapters.cli.inputs import parse_value, resolve_step, split_step_target

if TYPE_CHECKING:
    from baton.adapters.client import BatonClient


def cmd_step_claim(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        reply = await client.claim_step(
            session_id=args.session, task_id=args.task, worker=args.worker, msg_id=args.id
        )
        out.reply(reply, render.claim_reply)

    return run_async(args, body)


def cmd_step(args: argparse.Namespace) -> int:
    task_id, step = split_step_target(args.target)

    async def body(client: BatonClient, out: Output) -> None:
        step_id = await resolve_step(client, task_id, step)
        if args.verb == "complete":
            result = parse_value(args.result) if args.result is not None else None
            reply = await client.complete_step(
                task_id=task_id, step_id=step_id, result=result, msg_id=args.id
            )
        else:
            method = getattr(client, f"{args.verb}_step")
            reply = await method(
                task_id=task_id, step_id=step_id, message=args.message, msg_id=args.id
            )
        out.reply(reply, render.step_reply)

    return run_async(args, body)
