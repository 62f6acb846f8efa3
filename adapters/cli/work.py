"""``baton work -- COMMAND``: a worker that runs a shell command per claimed step, for people who
don't write Python. The step's view goes to the command's stdin as JSON; its stdout is the
step's result (JSON if it parses, else the text); a non-zero exit fails the step with the tail
of its stderr. ``BATON_TASK_ID``, ``BATON_STEP_ID``, ``BATON_STEP_NAME`` and ``BATON_CLAIM_ID``
are set in its environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from baton.adapters.cli.common import (
    EXIT_SERVER,
    EXIT_TASK_FAILED,
    EXIT_USAGE,
    CliError,
    Output,
    close_client,
    settings_of,
)
from baton.adapters.config import nats_credentials

if TYPE_CHECKING:
    from baton.adapters.client import BatonClient

#: How much of a failed command's stderr becomes the step's failure message.
STDERR_TAIL = 2000


class CommandFailed(Exception):
    """The step's command exited non-zero."""


def command_handler(command: list[str]) -> Any:
    """A step handler running ``command`` (one word: through ``sh -c``; several: as they are)."""

    async def handle(step: dict[str, Any]) -> Any:
        env = {
            **os.environ,
            "BATON_TASK_ID": str(step["task_id"]),
            "BATON_STEP_ID": str(step["step_id"]),
            "BATON_STEP_NAME": str(step.get("step_name") or ""),
            "BATON_CLAIM_ID": str(step.get("claim_id") or ""),
        }
        pipes: dict[str, Any] = {
            "stdin": asyncio.subprocess.PIPE,
            "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.PIPE,
            "env": env,
            "start_new_session": True,
        }
        if len(command) == 1:
            process = await asyncio.create_subprocess_shell(command[0], **pipes)
        else:
            process = await asyncio.create_subprocess_exec(*command, **pipes)
        try:
            out, err = await process.communicate(json.dumps(step).encode())
        except asyncio.CancelledError:  # the claim was lost, or the worker stops now
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        if process.returncode != 0:
            tail = err.decode(errors="replace").strip()[-STDERR_TAIL:]
            raise CommandFailed(tail or f"the command exited with status {process.returncode}")
        text = out.decode(errors="replace").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    return handle


async def _connect(args: argparse.Namespace) -> BatonClient:
    """A client on a connection that reconnects (a worker outlives NATS restarts)."""
    import nats

    from baton.adapters.client import BatonClient

    settings = settings_of(args)
    options = nats_credentials(settings)
    options.update(
        servers=settings.nats_servers,
        name=f"baton-work-{args.worker}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=args.connect_timeout,
    )
    try:
        nc = await nats.connect(**options)
    except Exception as error:
        raise CliError(
            f"error: no NATS server at {settings.nats_url} ({error or type(error).__name__})",
            EXIT_SERVER,
        ) from None
    return BatonClient(nc, settings.subject_prefix, timeout=args.request_timeout)


def cmd_work(args: argparse.Namespace) -> int:
    from baton.adapters.client import BatonRequestError
    from baton.adapters.worker import default_worker_name, work

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CliError("give the command to run per step after --, e.g. baton work --session S "
                       "-- ./step.sh")  # fmt: skip
    if not args.session and not args.task:
        raise CliError("give --session S or --task T: whose steps to work on")
    args.worker = args.worker or default_worker_name()
    out = Output(args.json)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        client = await _connect(args)
        try:
            if not out.as_json:
                scope = f"task {args.task}" if args.task else f"session {args.session}"
                out.line(
                    f"worker {args.worker} working on {scope} "
                    f"({args.concurrency} at a time, lease {args.lease:g} s); Ctrl-C to stop"
                )
            report = await work(
                client,
                command_handler(command),
                task_id=args.task,
                session_id=args.session,
                concurrency=args.concurrency,
                lease_s=args.lease,
                worker=args.worker,
                stop=stop,
                until_done=args.until_done,
            )
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await close_client(client)
        figures = {
            "claimed": report.claimed,
            "completed": report.completed,
            "failed": report.failed,
            "dropped": report.dropped,
        }
        if out.as_json:
            out.json(figures)
        else:
            out.line(", ".join(f"{v} {k}" for k, v in figures.items()))
        return EXIT_TASK_FAILED if report.failed else 0

    try:
        return asyncio.run(go())
    except BatonRequestError as error:
        raise CliError(
            f"error {error.code} {error.reason}: {error.message}",
            EXIT_USAGE if 400 <= error.code < 500 else EXIT_SERVER,
        ) from None
