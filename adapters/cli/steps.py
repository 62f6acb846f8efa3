"""``baton step claim|complete|fail|skip|retry|heartbeat``."""

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
            session_id=args.session,
            task_id=args.task,
            worker=args.worker,
            lease_s=args.lease,
            msg_id=args.id,
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
                task_id=task_id,
                step_id=step_id,
                result=result,
                claim_id=args.claim_id,
                claim_next=args.claim_next or None,
                worker=args.worker,
                lease_s=args.lease,
                msg_id=args.id,
            )
            out.reply(reply, render.step_reply)
            if args.claim_next and not out.as_json:
                out.line(render.claim_reply(reply.get("next") or {}, out.style))
            return
        if args.verb == "heartbeat":
            reply = await client.heartbeat_step(
                task_id=task_id,
                step_id=step_id,
                claim_id=args.claim_id,
                lease_s=args.lease,
                msg_id=args.id,
            )
        elif args.verb == "retry":
            reply = await client.retry_step(
                task_id=task_id, step_id=step_id, message=args.message, msg_id=args.id
            )
        else:
            method = getattr(client, f"{args.verb}_step")
            reply = await method(
                task_id=task_id,
                step_id=step_id,
                message=args.message,
                claim_id=args.claim_id,
                msg_id=args.id,
            )
        out.reply(reply, render.step_reply)

    return run_async(args, body)
