"""``baton watch``: a task's (or a session's, or every task's) progress events and triggers as
they happen, with a live progress bar on a terminal.

A lost NATS connection is tried again for about 30 s (``common.RECONNECT_ATTEMPTS``); once back,
the watch resumes the progress stream after the last stream sequence it saw, so no event is
skipped (none is shown twice either). When the connection does not come back, it exits 1 with a
message instead of going silent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from baton.adapters import contract, render
from baton.adapters.cli.common import (
    EXIT_OK,
    EXIT_SERVER,
    EXIT_TASK_FAILED,
    EXIT_TIMEOUT,
    RECONNECT_ATTEMPTS,
    RECONNECT_WAIT_S,
    CliError,
    Output,
    run_async,
)
from baton.adapters.subscriptions import flush_subscriptions

if TYPE_CHECKING:
    from baton.adapters.client import BatonClient


class Link:
    """The connection's state changes (nats.connect callbacks), as items of the watch's queue."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def callbacks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        async def disconnected() -> None:
            await self.queue.put(("disconnected", None))

        async def reconnected() -> None:
            await self.queue.put(("reconnected", None))

        async def closed() -> None:
            await self.queue.put(("closed", None))

        return {
            "disconnected_cb": disconnected,
            "reconnected_cb": reconnected,
            "closed_cb": closed,
        }


class Watcher:
    """Prints a task's (or every task's) progress events and triggers as they happen."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: BatonClient,
        out: Output,
        queue: asyncio.Queue[tuple[str, Any]] | None = None,
    ) -> None:
        self.args = args
        self.client = client
        self.out = out
        self.style = out.style
        self.prefix = client.prefix
        self.queue: asyncio.Queue[tuple[str, Any]] = queue or asyncio.Queue()
        self._interrupted = False
        self.last_seq = 0  # the progress stream's sequence of the last event received
        self.progress_sub: Any = None
        self.lost = False
        self.progress = render.Progress()
        self.live = not out.as_json and bool(getattr(out.stream, "isatty", lambda: False)())
        self.bar_shown = False
        self.sessions: dict[str, str | None] = {}
        self.seen: set[tuple[str, int]] = set()

    def _enqueue(self, kind: str) -> Callable[[Any], Awaitable[None]]:
        async def handler(msg: Any) -> None:
            if kind == "event":
                with contextlib.suppress(Exception):  # only JetStream messages have metadata
                    self.last_seq = max(self.last_seq, msg.metadata.sequence.stream)
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

    async def subscribe_progress(self) -> None:
        """An ordered consumer of the progress stream: from the start for a task, else new
        events; after a reconnect, from the event after the last one received."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        task_id: str | None = self.args.task
        subject = contract.progress_subject(self.prefix, task_id or ">")
        if self.last_seq:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.last_seq + 1
            )
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL if task_id else DeliverPolicy.NEW
            )
        if self.progress_sub is not None:
            with contextlib.suppress(Exception):
                await self.progress_sub.unsubscribe()
        js = self.client.nc.jetstream()
        self.progress_sub = await js.subscribe(
            subject, cb=self._enqueue("event"), ordered_consumer=True, config=config
        )

    async def resume(self) -> None:
        """After a reconnect: the progress stream again, after the last event seen. The server
        may need a moment to bring JetStream back, so this is tried for a while."""
        for _ in range(40):
            try:
                await self.subscribe_progress()
            except Exception:
                await asyncio.sleep(0.5)
                continue
            print(
                f"watch: reconnected; resuming after stream sequence {self.last_seq}",
                file=sys.stderr,
                flush=True,
            )
            return
        raise CliError("error: reconnected to NATS, but the progress stream did not come back")

    async def on_link(self, kind: str) -> None:
        """A change of the connection: say so; resume after a reconnect; fail once it is gone."""
        if kind == "disconnected" and not self.lost:
            self.lost = True
            self.finish_bar()
            print("watch: lost the connection to NATS; reconnecting", file=sys.stderr, flush=True)
        elif kind == "reconnected":
            self.lost = False
            await self.resume()
        elif kind == "closed":
            self.finish_bar()
            waited = RECONNECT_ATTEMPTS * RECONNECT_WAIT_S
            raise CliError(
                f"error: lost the connection to NATS and could not get it back within "
                f"{waited:g} s; the watch stopped (run it again to resume)",
                EXIT_SERVER,
            )

    async def run(self) -> int:
        from nats.js.errors import NotFoundError

        nc = self.client.nc
        task_id: str | None = self.args.task
        subject = contract.progress_subject(self.prefix, task_id or ">")
        try:
            await self.subscribe_progress()
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
                server = nc.connected_url.netloc if nc.connected_url else "NATS"
                self.out.line(
                    self.style.paint(
                        f"watching {scope} on {server} (prefix {self.prefix}); Ctrl-C to stop",
                        "dim",
                    )
                )
        # The subscriptions are in place before the first line shows (nc.flush() alone may
        # PING ahead of SUBs still queued: see subscriptions.flush_subscriptions).
        await flush_subscriptions(nc)
        self._interrupt_on_ctrl_c()
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            if self._interrupted:
                raise KeyboardInterrupt
            try:
                async with asyncio.timeout(remaining):
                    kind, data = await self.queue.get()
            except TimeoutError:
                break
            if kind == "interrupt":
                raise KeyboardInterrupt
            if kind == "event":
                ended = await self.on_event(data)
                if ended is not None:
                    return ended
            elif kind == "trigger":
                await self.on_trigger(data)
            else:
                await self.on_link(kind)
        self.finish_bar()
        where = f"task {task_id}" if task_id else "watch"
        print(f"{where}: timed out after {self.args.timeout:g} s", file=sys.stderr)
        return EXIT_TIMEOUT if task_id else EXIT_OK

    def _interrupt_on_ctrl_c(self) -> None:
        """Ctrl-C (SIGINT) becomes an item of the queue, handled after what is in hand. The
        default, cancelling the main task, is lost when the cancellation meets an await whose
        result is ready (``asyncio.wait_for``, nats-py's requests): the watch went on to its
        timeout and exited 0 while events streamed in."""
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._interrupt)

    def _interrupt(self) -> None:
        self._interrupted = True  # ahead of events already queued
        self.queue.put_nowait(("interrupt", None))  # wakes an idle wait

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

    link = Link()

    async def body(client: BatonClient, out: Output) -> int:
        return await Watcher(args, client, out, link.queue).run()

    return run_async(args, body, reconnect=True, **link.callbacks())
