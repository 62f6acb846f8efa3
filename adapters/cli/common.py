"""What every ``baton`` command shares: exit codes, the one-line error, output, connecting."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TextIO

from baton.adapters import render
from baton.adapters.config import SettingError, Settings, nats_credentials

if TYPE_CHECKING:
    from baton.adapters.client import BatonClient


EXIT_OK = 0


EXIT_SERVER = 1  # 5xx, no server, no responders, timeouts


EXIT_USAGE = 2  # 4xx and mistakes on the command line


EXIT_TASK_FAILED = 3  # `baton watch`: the task ended as error or cancelled


EXIT_TIMEOUT = 124  # `baton watch --timeout`: still running when time ran out (as timeout(1))


class CliError(Exception):
    """A failure to report on one line of stderr, with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.body = body


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


def silence_stdout() -> None:
    """Points stdout at /dev/null: after its reader went away (``baton ... | head``), so that
    nothing more written, nor Python's flush at exit, raises BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def settings_of(args: argparse.Namespace) -> Settings:
    try:
        settings = Settings.from_env()
    except SettingError as error:  # names the variable and what it expects
        raise CliError(f"error: {error}", EXIT_USAGE) from None
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


#: ``baton watch``: how long it tries to get a lost connection back (attempts x wait, seconds).
RECONNECT_ATTEMPTS = 60
RECONNECT_WAIT_S = 0.5


async def connect(
    args: argparse.Namespace, *, reconnect: bool = False, **callbacks: Any
) -> BatonClient:
    """A BatonClient on a NATS connection. The first connect fails fast; after it, a lost
    connection is given up at once, or with ``reconnect`` tried again for about 30 s (for long
    runs like ``baton watch``; ``callbacks`` go to ``nats.connect``: ``disconnected_cb``, ...)."""
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
        allow_reconnect=reconnect,
        # nats-py treats 0 as "no limit" while picking a server for the first connect.
        max_reconnect_attempts=1,
        reconnect_time_wait=0.1,
        connect_timeout=args.connect_timeout,
        error_cb=remember,
        **callbacks,
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
    if reconnect:
        # Connected: from now on a lost connection is tried again for a while. nats-py reads
        # these options at each attempt; the first connect above kept them short to fail fast.
        nc.options["max_reconnect_attempts"] = RECONNECT_ATTEMPTS
        nc.options["reconnect_time_wait"] = RECONNECT_WAIT_S
    from baton.adapters.client import PLANNING_MARGIN_S

    return BatonClient(
        nc,
        settings.subject_prefix,
        timeout=args.request_timeout,
        # A create or replan that waits on the planner outlives the service's planner timeout.
        planning_timeout=settings.planner_timeout_s + PLANNING_MARGIN_S,
    )


def run_async(
    args: argparse.Namespace,
    body: Callable[[BatonClient, Output], Awaitable[int | None]],
    *,
    reconnect: bool = False,
    **callbacks: Any,
) -> int:
    """Connects (see ``connect``), runs ``body(client, out)``, maps error replies to messages
    and exit codes."""
    from baton.adapters.client import BatonRequestError

    out = Output(args.json)

    async def go() -> int | None:
        client = await connect(args, reconnect=reconnect, **callbacks)
        try:
            return await body(client, out)
        finally:
            await close_client(client)

    try:
        code = asyncio.run(go())
    except BatonRequestError as error:
        body_json = {
            "error": {"code": error.code, "reason": error.reason, "message": error.message}
        }
        if error.details is not None:
            body_json["error"]["details"] = error.details
        text = render.error_line(error.code, error.reason, error.message)
        if error.reason == "no_responders":
            text += "; is `baton serve` running?"
        elif error.reason == "timeout":
            sent = error.details.get("msg_id") if isinstance(error.details, dict) else None
            if sent:
                text += f"; it may have been applied: repeat it with --id {sent} to find out"
            else:
                text += "; is `baton serve` running?"
        raise CliError(
            text, EXIT_USAGE if 400 <= error.code < 500 else EXIT_SERVER, body_json
        ) from None
    return code or EXIT_OK


async def close_client(client: BatonClient) -> None:
    nc = client.nc
    if nc.is_closed:
        return
    try:
        await asyncio.wait_for(nc.drain(), 2)
    except Exception:
        await nc.close()
