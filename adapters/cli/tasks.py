"""``baton task ...``, ``context``, and the read commands ``show``, ``active``, ``history``,
``queue`` and ``ls``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from baton.adapters import render
from baton.adapters.cli.common import Output, run_async
from baton.adapters.cli.inputs import parse_value, plan_from_args

if TYPE_CHECKING:
    from baton.adapters.client import BatonClient


def cmd_task_create(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)

    async def body(client: BatonClient, out: Output) -> None:
        view = await client.create_task(
            task_name=args.name,
            task_instruction=args.instruction,
            session_id=args.session,
            priority=args.priority,
            plan=plan,
            msg_id=args.id,
        )
        out.reply(view, render.task_tree)

    return run_async(args, body)


def cmd_task_start(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        reply = await client.start_task(
            task_id=args.task, delay_s=args.delay, priority=args.priority, msg_id=args.id
        )
        out.reply(reply, render.advance_reply)

    return run_async(args, body)


def cmd_task_next(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)

    async def body(client: BatonClient, out: Output) -> None:
        reply = await client.next_step(
            task_id=args.task, replan=args.replan or None, plan=plan, msg_id=args.id
        )
        out.reply(reply, render.advance_reply)

    return run_async(args, body)


def cmd_task_replan(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)

    def human(view: Any, style: render.Style) -> str:
        text = render.diff_lines(view.get("diff") or {}) + "\n" + render.task_tree(view, style)
        if view.get("advance"):
            text += f"\nadvanced: {view['advance'].get('status')}"
        return text

    async def body(client: BatonClient, out: Output) -> None:
        view = await client.replan_task(
            task_id=args.task, plan=plan, advance_next=args.advance_next or None, msg_id=args.id
        )
        out.reply(view, human)

    return run_async(args, body)


def cmd_task_end(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        if args.verb == "cancel":
            view = await client.cancel_task(task_id=args.task, reason=args.reason, msg_id=args.id)
        elif args.verb == "fail":
            view = await client.fail_task(task_id=args.task, message=args.message, msg_id=args.id)
        else:
            view = await client.complete_task(
                task_id=args.task, message=args.message, msg_id=args.id
            )
        out.reply(view, render.task_tree)

    return run_async(args, body)


def cmd_context(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        view = await client.add_context(
            task_id=args.task, key=args.key, value=parse_value(args.value), msg_id=args.id
        )
        out.reply(
            view,
            lambda v, s: (
                f"context {args.key} = {render.short(v['context'].get(args.key))}\n"
                + render.task_tree(v, s)
            ),
        )

    return run_async(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        out.reply(await client.task(task_id=args.task), render.task_tree)

    return run_async(args, body)


def cmd_active(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        view = await client.active(session_id=args.session)

        def human(v: Any, style: render.Style) -> str:
            if v is None:
                return f"session {args.session} has no running task"
            return render.task_tree(v, style)

        out.reply(view, human)

    return run_async(args, body)


def cmd_history(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        reply = await client.history(task_id=args.task, version=args.at)
        if args.at is not None:
            out.reply(
                reply,
                lambda r, s: f"as of version {r['version']}:\n" + render.task_tree(r["task"], s),
            )
        else:
            out.reply(reply, render.timeline)

    return run_async(args, body)


def cmd_queue(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        reply = await client.queue(session_id=args.session, limit=args.limit)
        out.reply(reply, render.queue_view)

    return run_async(args, body)


def cmd_ls(args: argparse.Namespace) -> int:
    async def body(client: BatonClient, out: Output) -> None:
        page = await client.tasks(
            status=args.status, session_id=args.session, limit=args.limit, after=args.after
        )
        tasks = list(page.get("tasks") or [])
        while args.all and page.get("cursor"):
            page = await client.tasks(
                status=args.status, session_id=args.session, limit=args.limit, after=page["cursor"]
            )
            tasks += page.get("tasks") or []
        reply = {"tasks": tasks, "cursor": page.get("cursor")}
        out.reply(reply, lambda r, s: render.tasks_table(r["tasks"], s))
        if not args.json and reply["cursor"] and not args.all:
            given = {"--status": args.status, "--session": args.session, "--limit": args.limit}
            again = ["baton ls"] + [f"{k} {v}" for k, v in given.items() if v is not None]
            again.append(f"--after {reply['cursor']}")
            print(f"(more: --all, or {' '.join(again)})", file=sys.stderr)

    return run_async(args, body)
