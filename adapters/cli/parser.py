"""The ``baton`` command line: its parser and ``main``.

Commands that send a subject of the contract are registered from the contract table
(``baton.adapters.contract``): the row names the command and gives its help.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from baton.adapters import contract
from baton.adapters.cli import admin, demo, steps, tasks, watch, work
from baton.adapters.cli.common import EXIT_OK, CliError, silence_stdout


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes; on subcommands they default to "not given"."""
    default: Any = argparse.SUPPRESS
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--json",
        action="store_true",
        default=default if suppress else False,
        help="print the raw JSON reply (for scripts)",
    )
    group.add_argument(
        "--nats",
        metavar="URL",
        default=default if suppress else None,
        help="NATS server (default $BATON_NATS_URL or nats://127.0.0.1:4222)",
    )
    group.add_argument(
        "--prefix",
        default=default if suppress else None,
        help="subject prefix (default $BATON_SUBJECT_PREFIX or baton)",
    )
    return parser


def _plan_options(parser: argparse.ArgumentParser, goal: bool = True) -> None:
    group = parser.add_argument_group("plan (a file, or --step options)")
    group.add_argument("--plan", metavar="FILE", help="a YAML or JSON plan ('-' reads stdin)")
    group.add_argument(
        "--step",
        action="append",
        metavar='"NAME: DESCRIPTION"',
        help="a step (repeat; sequential unless --depends is given)",
    )
    group.add_argument(
        "--depends",
        action="append",
        metavar="STEP=DEP1,DEP2",
        help="dependencies of a --step (repeat); makes the plan a graph",
    )
    if goal:
        group.add_argument("--goal", help="the plan's goal")


def _id_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", metavar="COMMAND_ID", help="idempotency key (sent as Nats-Msg-Id)")


def _lease_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lease",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the claim's lease (default: the service's BATON_CLAIM_LEASE_S)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = _common(suppress=True)
    parser = argparse.ArgumentParser(
        prog="baton",
        description="Baton: task and step lifecycles for agents, over NATS.",
        parents=[_common(suppress=False)],
        epilog="Exit codes: 0 ok, 2 a 4xx error or a usage mistake, 1 a 5xx error or no server; "
        "watch: 3 when the task ended as error or cancelled, 124 on --timeout.",
    )
    parser.set_defaults(connect_timeout=3.0, request_timeout=10.0)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        parent: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, parents=[common]
        )
        p.set_defaults(func=func)
        return p

    def row(
        parent: Any, subject: str, func: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        """The command of a row of the contract table: named and described by the row."""
        entry = contract.BY_NAME[subject]
        p = add(parent, entry.cli.split()[-1], func, entry.summary)
        p.set_defaults(subject=entry.name)
        return p

    add(
        sub,
        "serve",
        admin.cmd_serve,
        "run the Baton service (starts a local nats-server if needed)",
    )
    p = add(sub, "ui", admin.cmd_ui, "serve the web dashboard for a deployment (read-only)")
    p.add_argument(
        "--addr",
        default=None,
        metavar="HOST:PORT",
        help="where to listen (default $BATON_UI_ADDR or 127.0.0.1:8600)",
    )

    p = add(sub, "status", admin.cmd_status, "every instance's counts, lag and backlogs")
    p.add_argument("--all", action="store_true", help="instances of every subject prefix")
    p.add_argument(
        "--wait", type=float, default=2.0, metavar="SECONDS", help="longest wait for replies"
    )

    task = sub.add_parser("task", help="create, advance, replan and end tasks")
    task_sub = task.add_subparsers(dest="task_command", metavar="ACTION", required=True)
    p = row(task_sub, "task.create", tasks.cmd_task_create)
    p.add_argument("name", help="the task's name")
    p.add_argument("--instruction", default=None, help="the task's instruction")
    p.add_argument("--session", default=None, help="session id (default: the task id)")
    p.add_argument("--priority", type=int, default=None, help="lower is more urgent (default 5)")
    _plan_options(p)
    _id_option(p)

    p = row(task_sub, "task.start", tasks.cmd_task_start)
    p.add_argument("task")
    p.add_argument("--delay", type=float, default=None, metavar="SECONDS")
    p.add_argument("--priority", type=int, default=None)
    _id_option(p)

    p = row(task_sub, "task.next", tasks.cmd_task_next)
    p.add_argument("task")
    p.add_argument("--replan", action="store_true", help="revise the plan first")
    _plan_options(p)
    _id_option(p)

    p = row(task_sub, "task.replan", tasks.cmd_task_replan)
    p.add_argument("task")
    p.add_argument("--advance-next", action="store_true", help="then advance as task next does")
    _plan_options(p)
    _id_option(p)

    for verb in ("complete", "fail"):
        p = row(task_sub, f"task.{verb}", tasks.cmd_task_end)
        p.add_argument("task")
        p.add_argument("--message", default=None)
        p.set_defaults(verb=verb)
        _id_option(p)
    p = row(task_sub, "task.cancel", tasks.cmd_task_end)
    p.add_argument("task")
    p.add_argument("--reason", default=None)
    p.set_defaults(verb="cancel")
    _id_option(p)

    step = sub.add_parser("step", help="claim, complete, fail, skip, retry and heartbeat steps")
    step_sub = step.add_subparsers(dest="step_command", metavar="ACTION", required=True)
    p = row(step_sub, "step.claim", steps.cmd_step_claim)
    p.add_argument("--session", default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--worker", default=None)
    _lease_option(p)
    _id_option(p)
    for verb in ("complete", "fail", "skip", "retry", "heartbeat"):
        p = row(step_sub, f"step.{verb}", steps.cmd_step)
        p.add_argument(
            "target",
            nargs="+",
            metavar="TASK STEP",
            help="TASK and STEP (id, index or name), or a step id alone",
        )
        if verb == "complete":
            p.add_argument("--result", default=None, help="JSON, or a plain string")
            p.add_argument(
                "--claim-next",
                action="store_true",
                help="then claim the next step of the task in the same request",
            )
            p.add_argument("--worker", default=None, help="who claims the next step")
            _lease_option(p)
        elif verb != "heartbeat":
            p.add_argument("--message", default=None)
        if verb == "heartbeat":
            p.add_argument("--claim-id", required=True, metavar="ID", help="the claim to extend")
            _lease_option(p)
        elif verb != "retry":
            p.add_argument(
                "--claim-id",
                default=None,
                metavar="ID",
                help="act only while this claim holds the step (else 409 stale_claim)",
            )
        p.set_defaults(verb=verb)
        _id_option(p)

    p = row(sub, "task.context", tasks.cmd_context)
    p.add_argument("task")
    p.add_argument("key")
    p.add_argument("value", help="JSON, or a plain string")
    _id_option(p)

    p = row(sub, "query.task", tasks.cmd_show)
    p.add_argument("task")

    p = row(sub, "query.active", tasks.cmd_active)
    p.add_argument("session", help="the session id")

    p = add(
        sub, "watch", watch.cmd_watch, "live progress of a task (until it ends), a session, or all"
    )
    p.add_argument("task", nargs="?", default=None)
    p.add_argument("--session", default=None)
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS")

    p = row(sub, "query.history", tasks.cmd_history)
    p.add_argument("task")
    p.add_argument("--at", type=int, default=None, metavar="VERSION", help="the task view then")

    p = row(sub, "query.queue", tasks.cmd_queue)
    p.add_argument("--session", default=None)
    p.add_argument("--limit", type=int, default=None)

    p = row(sub, "query.tasks", tasks.cmd_ls)
    p.add_argument("--status", default=None, help="queued, running, completed, error, cancelled")
    p.add_argument("--session", default=None)
    p.add_argument("--limit", type=int, default=None, help="page size (1-1000, default 100)")
    p.add_argument("--after", default=None, metavar="CURSOR", help="the page after this cursor")
    p.add_argument("--all", action="store_true", help="follow the cursor through every page")

    proj = sub.add_parser("projections", help="the read side's lag, and rebuilding it")
    proj_sub = proj.add_subparsers(dest="projections_command", metavar="ACTION", required=True)
    p = add(
        proj_sub, "status", admin.cmd_projections, "events not yet applied to the views (local)"
    )
    p.set_defaults(action="status", force=False)
    p = add(
        proj_sub,
        "rebuild",
        admin.cmd_projections,
        "rebuild the views from the events (service stopped)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if a service answers")
    p.set_defaults(action="rebuild")

    p = add(sub, "schema", admin.cmd_schema, "write the AsyncAPI document and JSON Schemas")
    p.add_argument("--out", default=None, metavar="DIR", help="directory (default: print AsyncAPI)")

    p = add(
        sub, "harness", admin.cmd_harness, "check a running deployment against the contract's laws"
    )
    p.add_argument("--examples", type=int, default=50, help="command sequences to try")
    p.add_argument("--steps", type=int, default=20, help="commands per sequence, at most")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, in seconds")

    p = add(
        sub,
        "work",
        work.cmd_work,
        "claim steps and run a command per step (the step as JSON on stdin, its stdout the "
        "result, a non-zero exit a failure)",
    )
    p.add_argument("--session", default=None, help="work on this session's running task")
    p.add_argument("--task", default=None, help="work on this task only")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="steps at a time")
    p.add_argument("--lease", type=float, default=30.0, metavar="SECONDS", help="default 30")
    p.add_argument("--worker", default=None, help="the claims' worker name (default host-pid)")
    p.add_argument(
        "--until-done",
        action="store_true",
        help="exit once nothing is left to hand out (else run until Ctrl-C or SIGTERM)",
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")

    p = add(sub, "demo", demo.cmd_demo, "run a small dependency plan to completion, step by step")
    p.add_argument("--session", default="demo", help="session id (default: demo)")
    p.add_argument("--pause", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--worker", default="demo-worker")
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``baton`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except CliError as error:
        if args.json and error.body is not None:
            print(json.dumps(error.body, ensure_ascii=False), flush=True)
        print(error.message, file=sys.stderr, flush=True)
        code = error.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # `baton ls | head`: the reader has what it wanted
        silence_stdout()
        code = EXIT_OK
    sys.exit(code)
