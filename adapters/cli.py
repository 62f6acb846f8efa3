"""``baton``: the command line of Baton.

Every command speaks the contract over NATS (``--nats URL``, ``--prefix``) and prints a human
view, or the raw reply with ``--json``. An error reply prints the contract's message to stderr
(``error 409 invalid_transition: cannot complete step 'b': it is cancelled``) and exits 2 for a
4xx, 1 for a 5xx or when no server answers; a user's mistake never shows a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from baton.adapters import contract, render
from baton.adapters.config import Settings, nats_credentials
from baton.domain import commands as c

EXIT_OK = 0
EXIT_SERVER = 1  # 5xx, no server, no responders, timeouts
EXIT_USAGE = 2  # 4xx and mistakes on the command line
EXIT_TASK_FAILED = 3  # `baton watch`: the task ended as error or cancelled
EXIT_TIMEOUT = 124  # `baton watch --timeout`: still running when time ran out (as timeout(1))

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


class CliError(Exception):
    """A failure to report on one line of stderr, with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.body = body


# -- output ---------------------------------------------------------------------------------------


class Output:
    """Where and how a command prints: JSON for scripts, or styled text for people."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.style = render.Style.for_stream(self.stream)

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, ensure_ascii=False), file=self.stream, flush=True)

    def line(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def reply(self, value: Any, human: Callable[[Any, render.Style], str]) -> None:
        if self.as_json:
            self.json(value)
        else:
            self.line(human(value, self.style))


# -- inputs -------------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """JSON when the text parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_plan_file(path: str) -> dict[str, Any]:
    """A plan from a YAML or JSON file (``-`` reads stdin); a bare list is the plan's steps."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read plan file {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as error:
        raise CliError(f"plan file {path} is neither YAML nor JSON: {error}") from None
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict):
        raise CliError(f"plan file {path} must hold a plan object or a list of steps")
    return data


def parse_step_option(text: str) -> dict[str, Any]:
    """``"name: description"`` (the description is optional)."""
    name, sep, description = text.partition(":")
    if not name.strip():
        raise CliError(f"--step {text!r}: expected 'name: description'")
    step: dict[str, Any] = {"step_name": name.strip()}
    if sep:
        step["description"] = description.strip()
    return step


def parse_depends_option(text: str) -> tuple[str, list[str]]:
    """``"name=dep1,dep2"`` (``"name="`` for none)."""
    name, sep, deps = text.partition("=")
    if not sep or not name.strip():
        raise CliError(f"--depends {text!r}: expected 'step=dep1,dep2'")
    return name.strip(), [d.strip() for d in deps.split(",") if d.strip()]


def plan_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The plan given by ``--plan FILE`` or by ``--step``/``--depends`` options, or None."""
    steps_opt: list[str] = getattr(args, "step", None) or []
    depends_opt: list[str] = getattr(args, "depends", None) or []
    plan_file: str | None = getattr(args, "plan", None)
    if plan_file and (steps_opt or depends_opt):
        raise CliError("give either --plan FILE or --step options, not both")
    if plan_file:
        plan = load_plan_file(plan_file)
    elif steps_opt:
        steps = [parse_step_option(s) for s in steps_opt]
        if depends_opt:
            deps = dict(parse_depends_option(d) for d in depends_opt)
            names = {s["step_name"] for s in steps}
            unknown = sorted(set(deps) - names)
            if unknown:
                raise CliError(f"--depends names unknown step {', '.join(unknown)}")
            for step in steps:
                step["depends_on"] = deps.get(step["step_name"], [])
        plan = {"steps": steps}
    elif depends_opt:
        raise CliError("--depends needs --step options")
    else:
        return None
    goal = getattr(args, "goal", None)
    if goal is not None:
        plan["goal"] = goal
    return plan


# -- connecting -----------------------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, Any] = {}
    if args.nats:
        changes["nats_url"] = args.nats
    if args.prefix:
        changes["subject_prefix"] = args.prefix
    return dataclasses.replace(settings, **changes) if changes else settings


def _describe(error: BaseException | None) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "timed out"
    if error is None:
        return "no answer"
    return str(error) or type(error).__name__


async def connect(args: argparse.Namespace) -> Any:
    """A BatonClient on a NATS connection that fails fast instead of reconnecting."""
    import nats

    from baton.adapters.client import BatonClient

    settings = settings_of(args)
    errors: list[BaseException] = []

    async def remember(error: BaseException) -> None:
        errors.append(error)  # failures surface as one message below, not as log lines

    options = nats_credentials(settings)
    options.update(
        servers=settings.nats_servers,
        name="baton-cli",
        allow_reconnect=False,
        # nats-py treats 0 as "no limit" while picking a server for the first connect.
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        connect_timeout=args.connect_timeout,
        error_cb=remember,
    )
    try:
        nc = await nats.connect(**options)
    except Exception as error:
        reason = _describe(errors[-1] if errors else error)
        raise CliError(
            f"error: no NATS server at {settings.nats_url} ({reason}); start one with `make run`"
            " or pass --nats URL",
            EXIT_SERVER,
        ) from None
    return BatonClient(nc, settings.subject_prefix, timeout=args.request_timeout)


def run_async(
    args: argparse.Namespace, body: Callable[[Any, Output], Awaitable[int | None]]
) -> int:
    """Connects, runs ``body(client, out)``, maps error replies to messages and exit codes."""
    from baton.adapters.client import BatonRequestError

    out = Output(args.json)

    async def go() -> int | None:
        client = await connect(args)
        try:
            return await body(client, out)
        finally:
            await _close(client)

    try:
        code = asyncio.run(go())
    except BatonRequestError as error:
        body_json = {
            "error": {"code": error.code, "reason": error.reason, "message": error.message}
        }
        if error.details is not None:
            body_json["error"]["details"] = error.details
        text = render.error_line(error.code, error.reason, error.message)
        if error.reason in ("no_responders", "timeout"):
            text += "; is `baton serve` running?"
        raise CliError(
            text, EXIT_USAGE if 400 <= error.code < 500 else EXIT_SERVER, body_json
        ) from None
    return code or EXIT_OK


async def _close(client: Any) -> None:
    nc = client.nc
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), 2)
    except Exception:
        await nc.close()


async def resolve_step(client: Any, task_id: str, step: str) -> str:
    """A step id from a step id, a step index or a step name of the task."""
    if step.startswith(f"{task_id}."):
        return step
    if step.isdigit():
        return f"{task_id}.{step}"
    view = await client.task(task_id=task_id)
    for candidate in view.get("steps", []):
        if candidate.get("step_name") == step:
            return str(candidate["step_id"])
    names = ", ".join(str(s.get("step_name")) for s in view.get("steps", []))
    raise CliError(
        f"error 404 not_found: task {task_id!r} has no step {step!r} (steps: {names})", EXIT_USAGE
    )


def split_step_target(target: Sequence[str]) -> tuple[str, str]:
    """``TASK STEP`` or a lone ``STEP_ID`` (``<task_id>.<index>``)."""
    if len(target) == 2:
        return target[0], target[1]
    if len(target) == 1:
        task_id, dot, index = target[0].rpartition(".")
        if dot and task_id and index.isdigit():
            return task_id, target[0]
        raise CliError(f"give TASK STEP or a step id like <task_id>.0, not {target[0]!r}")
    raise CliError("give TASK STEP or a step id")


# -- commands -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from baton.adapters.bootstrap import serve

    logging.basicConfig(
        level=os.environ.get("BATON_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = settings_of(args)
    try:
        asyncio.run(serve(settings))
    except (RuntimeError, OSError) as error:
        raise CliError(f"error: cannot serve: {error}", EXIT_SERVER) from None
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    """Serves the web dashboard for the deployment at --nats (read-only)."""
    from baton.adapters.ui import DEFAULT_ADDR, Dashboard, parse_addr, run_dashboard

    logging.basicConfig(
        level=os.environ.get("BATON_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = settings_of(args)
    addr = args.addr or settings.ui_addr or DEFAULT_ADDR
    try:
        parse_addr(addr)
    except ValueError as error:
        raise CliError(f"error: --addr: {error}") from None

    def ready(dashboard: Dashboard) -> None:
        print(
            f"dashboard on {dashboard.url} for NATS at {dashboard.link.server} "
            f"(prefix {settings.subject_prefix}); Ctrl-C to stop",
            flush=True,
        )

    try:
        asyncio.run(run_dashboard(settings, addr, on_ready=ready))
    except OSError as error:
        raise CliError(
            f"error: cannot serve the dashboard on {addr}: {error.strerror or error}", EXIT_SERVER
        ) from None
    return EXIT_OK


def cmd_harness(args: argparse.Namespace) -> int:
    """Runs the property-based state machine over NATS; exit 1 on a contract break."""
    from baton.adapters.harness import run_harness

    settings = settings_of(args)
    report = run_harness(
        settings.nats_url,
        settings.subject_prefix,
        args.examples,
        steps=args.steps,
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(report), ensure_ascii=False), flush=True)
    else:
        print(report.summary(), flush=True)
    return EXIT_OK if report.ok else EXIT_SERVER


def cmd_task_create(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)

    async def body(client: Any, out: Output) -> None:
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
    async def body(client: Any, out: Output) -> None:
        reply = await client.start_task(
            task_id=args.task, delay_s=args.delay, priority=args.priority, msg_id=args.id
        )
        out.reply(reply, render.advance_reply)

    return run_async(args, body)


def cmd_task_next(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)

    async def body(client: Any, out: Output) -> None:
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

    async def body(client: Any, out: Output) -> None:
        view = await client.replan_task(
            task_id=args.task, plan=plan, advance_next=args.advance_next or None, msg_id=args.id
        )
        out.reply(view, human)

    return run_async(args, body)


def cmd_task_end(args: argparse.Namespace) -> int:
    async def body(client: Any, out: Output) -> None:
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
    async def body(client: Any, out: Output) -> None:
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


def cmd_step_claim(args: argparse.Namespace) -> int:
    async def body(client: Any, out: Output) -> None:
        reply = await client.claim_step(
            session_id=args.session, task_id=args.task, worker=args.worker, msg_id=args.id
        )
        out.reply(reply, render.claim_reply)

    return run_async(args, body)


def cmd_step(args: argparse.Namespace) -> int:
    task_id, step = split_step_target(args.target)

    async def body(client: Any, out: Output) -> None:
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


def cmd_show(args: argparse.Namespace) -> int:
    async def body(client: Any, out: Output) -> None:
        out.reply(await client.task(task_id=args.task), render.task_tree)

    return run_async(args, body)


def cmd_active(args: argparse.Namespace) -> int:
    async def body(client: Any, out: Output) -> None:
        view = await client.active(session_id=args.session)

        def human(v: Any, style: render.Style) -> str:
            if v is None:
                return f"session {args.session} has no running task"
            return render.task_tree(v, style)

        out.reply(view, human)

    return run_async(args, body)


def cmd_history(args: argparse.Namespace) -> int:
    async def body(client: Any, out: Output) -> None:
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
    async def body(client: Any, out: Output) -> None:
        reply = await client.queue(session_id=args.session, limit=args.limit)
        out.reply(reply, render.queue_view)

    return run_async(args, body)


def cmd_ls(args: argparse.Namespace) -> int:
    async def body(client: Any, out: Output) -> None:
        page = await client.tasks(status=args.status, session_id=args.session, limit=args.limit)
        tasks = list(page.get("tasks") or [])
        while args.all and page.get("cursor"):
            page = await client.tasks(
                status=args.status, session_id=args.session, limit=args.limit, after=page["cursor"]
            )
            tasks += page.get("tasks") or []
        reply = {"tasks": tasks, "cursor": page.get("cursor")}
        out.reply(reply, lambda r, s: render.tasks_table(r["tasks"], s))
        if not args.json and reply["cursor"] and not args.all:
            print(f"(more: --all, or --after {reply['cursor']})", file=sys.stderr)

    return run_async(args, body)


def cmd_schema(args: argparse.Namespace) -> int:
    from baton.adapters import schema

    prefix = args.prefix or Settings.from_env().subject_prefix
    if args.out is None:
        print(schema.dumps(schema.asyncapi(prefix)), end="")
        return EXIT_OK
    written = schema.write_documents(Path(args.out), prefix)
    out = Output(args.json)
    if args.json:
        out.json([str(p) for p in written])
    else:
        out.line(f"wrote {len(written)} files under {args.out}: asyncapi.json, schemas/*.json")
    return EXIT_OK


# -- projections ----------------------------------------------------------------------------------


def _local_projections(settings: Settings) -> Any:
    from baton.adapters.config import event_store_env
    from baton.domain.services import BatonApp
    from baton.projections import Projections

    app = BatonApp(event_store_env(settings))
    return app, Projections(app)


def cmd_projections(args: argparse.Namespace) -> int:
    """Status and rebuild run locally against the store Settings name (BATON_DATA_DIR or
    BATON_POSTGRES_URL): the service exposes no admin subject."""
    settings = settings_of(args)
    out = Output(args.json)
    if args.action == "rebuild" and not args.force:
        from baton.adapters.natsserver import nats_answers

        if nats_answers(settings.nats_url, timeout=0.5) and _service_answers(args):
            raise CliError(
                "error: a Baton service answers on this prefix; stop it before a rebuild "
                "(or pass --force if it uses another store)",
                EXIT_USAGE,
            )
    try:
        app, projections = _local_projections(settings)
    except Exception as error:
        raise CliError(f"error: cannot open the store: {error}", EXIT_SERVER) from None
    try:
        if args.action == "status":
            reply = {**projections.lag(), "store": _store_name(settings)}
            out.reply(
                reply,
                lambda r, s: (
                    f"projections: applied {r['applied']} of {r['stored']} events, "
                    f"{r['behind']} behind (store {r['store']})"
                ),
            )
        else:
            started = time.monotonic()
            applied = projections.rebuild()
            reply = {
                "rebuilt": True,
                "applied": applied,
                "seconds": round(time.monotonic() - started, 3),
                "store": _store_name(settings),
            }
            out.reply(
                reply,
                lambda r, s: (
                    f"projections rebuilt: {r['applied']} events applied in "
                    f"{r['seconds']} s (store {r['store']})"
                ),
            )
    finally:
        for closeable in (projections, app):
            close = getattr(closeable, "close", None)
            if callable(close):
                close()
    return EXIT_OK


def _store_name(settings: Settings) -> str:
    if settings.postgres_url:
        return "postgres"
    return str((settings.data_dir / "events.sqlite").resolve())


def _service_answers(args: argparse.Namespace) -> bool:
    from baton.adapters.client import BatonRequestError

    async def probe() -> bool:
        try:
            client = await connect(args)
        except CliError:
            return False
        try:
            await client.request(contract.subject_of(c.TasksQuery), {"limit": 1}, timeout=1.0)
            return True
        except BatonRequestError as error:
            return error.reason not in ("no_responders", "timeout")
        finally:
            await _close(client)

    return asyncio.run(probe())


# -- watch ----------------------------------------------------------------------------------------


class Watcher:
    """Prints a task's (or every task's) progress events and triggers as they happen."""

    def __init__(self, args: argparse.Namespace, client: Any, out: Output) -> None:
        self.args = args
        self.client = client
        self.out = out
        self.style = out.style
        self.prefix = client.prefix
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.progress = render.Progress()
        self.live = not out.as_json and bool(getattr(out.stream, "isatty", lambda: False)())
        self.bar_shown = False
        self.sessions: dict[str, str | None] = {}
        self.seen: set[tuple[str, int]] = set()

    def _enqueue(self, kind: str) -> Callable[[Any], Awaitable[None]]:
        async def handler(msg: Any) -> None:
            try:
                data = json.loads(msg.data)
            except ValueError:
                return
            await self.queue.put((kind, data))

        return handler

    def emit(self, text: str) -> None:
        stream = self.out.stream
        if self.bar_shown:
            stream.write("\r\x1b[K")
            self.bar_shown = False
        stream.write(text + "\n")
        if self.live and self.args.task:
            stream.write(self.progress.bar(self.style))
            self.bar_shown = True
        stream.flush()

    def finish_bar(self) -> None:
        if self.bar_shown:
            self.out.stream.write("\n")
            self.out.stream.flush()
            self.bar_shown = False

    async def run(self) -> int:
        from nats.js.api import DeliverPolicy
        from nats.js.errors import NotFoundError

        nc = self.client.nc
        js = nc.jetstream()
        task_id: str | None = self.args.task
        subject = contract.progress_subject(self.prefix, task_id or ">")
        try:
            await js.subscribe(
                subject,
                cb=self._enqueue("event"),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL if task_id else DeliverPolicy.NEW,
            )
        except NotFoundError:
            raise CliError(
                f"error: no JetStream stream holds {subject}; is `baton serve` running "
                f"with prefix {self.prefix!r}?",
                EXIT_SERVER,
            ) from None
        if task_id:
            view = await self.find_task(task_id)
            if view is not None:
                self.progress.session_id = view.get("session_id")
            session = self.progress.session_id
            if session:
                await nc.subscribe(
                    contract.trigger_subject(self.prefix, session), cb=self._enqueue("trigger")
                )
        else:
            session = self.args.session
            await nc.subscribe(
                contract.trigger_subject(self.prefix, session or ">"), cb=self._enqueue("trigger")
            )
            if not self.out.as_json:
                scope = f"session {session}" if session else "every task"
                self.out.line(
                    self.style.paint(
                        f"watching {scope} on {nc.connected_url.netloc} "
                        f"(prefix {self.prefix}); Ctrl-C to stop",
                        "dim",
                    )
                )
        await nc.flush()  # the subscriptions are in place before the first line shows
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                kind, data = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                break
            if kind == "event":
                ended = await self.on_event(data)
                if ended is not None:
                    return ended
            else:
                await self.on_trigger(data)
        self.finish_bar()
        where = f"task {task_id}" if task_id else "watch"
        print(f"{where}: timed out after {self.args.timeout:g} s", file=sys.stderr)
        return EXIT_TIMEOUT if task_id else EXIT_OK

    async def find_task(self, task_id: str) -> dict[str, Any] | None:
        """The task's view; None while the projection lags a task whose events arrive.
        An unknown task raises the 404 (after a second of patience)."""
        from baton.adapters.client import BatonRequestError

        for _ in range(10):
            try:
                view: dict[str, Any] = await self.client.task(task_id=task_id)
                return view
            except BatonRequestError as error:
                if error.code != 404:
                    raise
                if not self.queue.empty():
                    return None
                last = error
            await asyncio.sleep(0.1)
        raise last

    async def session_of(self, event: dict[str, Any]) -> str | None:
        task_id = str(event.get("task_id"))
        if event.get("type") == "Created":
            self.sessions[task_id] = (event.get("data") or {}).get("session_id")
        if task_id not in self.sessions:
            try:
                view = await self.client.task(task_id=task_id)
                self.sessions[task_id] = view.get("session_id")
            except Exception:
                self.sessions[task_id] = None
        return self.sessions[task_id]

    async def on_event(self, event: dict[str, Any]) -> int | None:
        key = (str(event.get("task_id")), int(event.get("version") or 0))
        if key in self.seen:
            return None
        self.seen.add(key)
        if not self.args.task:
            if self.args.session and await self.session_of(event) != self.args.session:
                return None
            if self.out.as_json:
                self.out.line(json.dumps(event, ensure_ascii=False))
            else:
                tag = self.style.paint(str(event.get("task_id")), "blue")
                self.emit(f"{tag} {render.event_line(event, self.style)}")
            return None
        first_session = self.progress.session_id
        self.progress.apply(event)
        if first_session is None and self.progress.session_id:
            await self.client.nc.subscribe(
                contract.trigger_subject(self.prefix, self.progress.session_id),
                cb=self._enqueue("trigger"),
            )
        if self.out.as_json:
            self.out.line(json.dumps(event, ensure_ascii=False))
        else:
            self.emit(render.progress_line(event, self.progress, self.style))
        if self.progress.ended:
            self.finish_bar()
            if not self.out.as_json:
                self.out.line(self.progress.bar(self.style))
            return EXIT_OK if self.progress.task_status == "completed" else EXIT_TASK_FAILED
        return None

    async def on_trigger(self, trigger: dict[str, Any]) -> None:
        if self.args.task and trigger.get("task_id") != self.args.task:
            return
        if self.out.as_json:
            self.out.line(json.dumps({"trigger": trigger}, ensure_ascii=False))
        else:
            self.emit(
                f"{render.clock(time.time())} {self.style.paint('fired', 'yellow')} "
                + render.trigger_line(trigger, self.style)
            )


def cmd_watch(args: argparse.Namespace) -> int:
    if args.task and args.session:
        raise CliError("give TASK or --session, not both")

    async def body(client: Any, out: Output) -> int:
        return await Watcher(args, client, out).run()

    return run_async(args, body)


# -- demo -----------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    async def body(client: Any, out: Output) -> int:
        style = out.style
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
        say(f"started: trigger for {started['step']['step_name']} scheduled")
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
                f"error: the demo task ended as {final.get('status')} (queue {status})",
                EXIT_SERVER,
            )
        return EXIT_OK

    return run_async(args, body)


# -- the parser -----------------------------------------------------------------------------------


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

    add(sub, "serve", cmd_serve, "run the Baton service (starts a local nats-server if needed)")
    p = add(sub, "ui", cmd_ui, "serve the web dashboard for a deployment (read-only)")
    p.add_argument(
        "--addr",
        default=None,
        metavar="HOST:PORT",
        help="where to listen (default $BATON_UI_ADDR or 127.0.0.1:8600)",
    )

    task = sub.add_parser("task", help="create, advance, replan and end tasks")
    task_sub = task.add_subparsers(dest="task_command", metavar="ACTION", required=True)
    p = row(task_sub, "task.create", cmd_task_create)
    p.add_argument("name", help="the task's name")
    p.add_argument("--instruction", default=None, help="the task's instruction")
    p.add_argument("--session", default=None, help="session id (default: the task id)")
    p.add_argument("--priority", type=int, default=None, help="lower is more urgent (default 5)")
    _plan_options(p)
    _id_option(p)

    p = row(task_sub, "task.start", cmd_task_start)
    p.add_argument("task")
    p.add_argument("--delay", type=float, default=None, metavar="SECONDS")
    p.add_argument("--priority", type=int, default=None)
    _id_option(p)

    p = row(task_sub, "task.next", cmd_task_next)
    p.add_argument("task")
    p.add_argument("--replan", action="store_true", help="revise the plan first")
    _plan_options(p)
    _id_option(p)

    p = row(task_sub, "task.replan", cmd_task_replan)
    p.add_argument("task")
    p.add_argument("--advance-next", action="store_true", help="then advance as task next does")
    _plan_options(p)
    _id_option(p)

    for verb in ("complete", "fail"):
        p = row(task_sub, f"task.{verb}", cmd_task_end)
        p.add_argument("task")
        p.add_argument("--message", default=None)
        p.set_defaults(verb=verb)
        _id_option(p)
    p = row(task_sub, "task.cancel", cmd_task_end)
    p.add_argument("task")
    p.add_argument("--reason", default=None)
    p.set_defaults(verb="cancel")
    _id_option(p)

    step = sub.add_parser("step", help="claim, complete, fail, skip and retry steps")
    step_sub = step.add_subparsers(dest="step_command", metavar="ACTION", required=True)
    p = row(step_sub, "step.claim", cmd_step_claim)
    p.add_argument("--session", default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--worker", default=None)
    _id_option(p)
    for verb in ("complete", "fail", "skip", "retry"):
        p = row(step_sub, f"step.{verb}", cmd_step)
        p.add_argument(
            "target",
            nargs="+",
            metavar="TASK STEP",
            help="TASK and STEP (id, index or name), or a step id alone",
        )
        if verb == "complete":
            p.add_argument("--result", default=None, help="JSON, or a plain string")
        else:
            p.add_argument("--message", default=None)
        p.set_defaults(verb=verb)
        _id_option(p)

    p = row(sub, "task.context", cmd_context)
    p.add_argument("task")
    p.add_argument("key")
    p.add_argument("value", help="JSON, or a plain string")
    _id_option(p)

    p = row(sub, "query.task", cmd_show)
    p.add_argument("task")

    p = row(sub, "query.active", cmd_active)
    p.add_argument("session", help="the session id")

    p = add(sub, "watch", cmd_watch, "live progress of a task (until it ends), a session, or all")
    p.add_argument("task", nargs="?", default=None)
    p.add_argument("--session", default=None)
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS")

    p = row(sub, "query.history", cmd_history)
    p.add_argument("task")
    p.add_argument("--at", type=int, default=None, metavar="VERSION", help="the task view then")

    p = row(sub, "query.queue", cmd_queue)
    p.add_argument("--session", default=None)
    p.add_argument("--limit", type=int, default=None)

    p = row(sub, "query.tasks", cmd_ls)
    p.add_argument("--status", default=None, help="queued, running, completed, error, cancelled")
    p.add_argument("--session", default=None)
    p.add_argument("--limit", type=int, default=None, help="page size (1-1000, default 100)")
    p.add_argument("--all", action="store_true", help="follow the cursor through every page")

    proj = sub.add_parser("projections", help="the read side's lag, and rebuilding it")
    proj_sub = proj.add_subparsers(dest="projections_command", metavar="ACTION", required=True)
    p = add(proj_sub, "status", cmd_projections, "events not yet applied to the views (local)")
    p.set_defaults(action="status", force=False)
    p = add(
        proj_sub, "rebuild", cmd_projections, "rebuild the views from the events (service stopped)"
    )
    p.add_argument("--force", action="store_true", help="rebuild even if a service answers")
    p.set_defaults(action="rebuild")

    p = add(sub, "schema", cmd_schema, "write the AsyncAPI document and JSON Schemas")
    p.add_argument("--out", default=None, metavar="DIR", help="directory (default: print AsyncAPI)")

    p = add(sub, "harness", cmd_harness, "check a running deployment against the contract's laws")
    p.add_argument("--examples", type=int, default=50, help="command sequences to try")
    p.add_argument("--steps", type=int, default=20, help="commands per sequence, at most")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, in seconds")

    p = add(sub, "demo", cmd_demo, "run a small dependency plan to completion, step by step")
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
    except BrokenPipeError:  # `baton ls | head`
        sys.stderr.close()
        code = EXIT_OK
    sys.exit(code)


if __name__ == "__main__":
    main()
