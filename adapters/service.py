"""Baton's NATS micro service: one endpoint per command and query of the contract.

Each request is checked (size, then pydantic) before anything else happens. The event store and
the projections are synchronous, so they run on a thread pool and the event loop keeps serving
meanwhile. An endpoint handler only hands its request to a task (a semaphore bounds how many are
in flight), so requests on one subject are processed concurrently. Commands go through a group
committer: those that arrive while a group is being saved are applied together in the next
transaction (``BatonApp.handle_batch``). Queries first catch the projections up, so a client
reads its own writes.

Guards against hostile clients: a request whose reply subject is under Baton's prefix or a ``$``
subject is dropped (Baton never writes into its own streams or JetStream's API for a client); a
reply too big for the server's ``max_payload`` becomes a 413 error reply; the requests waiting for
the planner hold a bounded share of the in-flight slots (503 beyond).
"""

from __future__ import annotations

import asyncio
import copy
import importlib.metadata
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

import psycopg
from eventsourcing.persistence import PersistenceError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import MaxPayloadError
from nats.micro.request import Request
from nats.micro.service import Service
from pydantic import BaseModel

from baton.adapters import contract, logs
from baton.adapters.messages import (
    MSG_ID_HEADER,
    encode,
    error_body,
    error_headers,
    parse,
)
from baton.adapters.metrics import ServiceMetrics
from baton.adapters.planner import NatsPlanner
from baton.adapters.subscriptions import flush_subscriptions
from baton.domain import commands as c
from baton.domain.errors import (
    BatonError,
    InvalidRequest,
    PlannerUnavailable,
    StoreUnavailable,
    TooLarge,
)
from baton.domain.limits import MAX_ID
from baton.domain.services import BatonApp
from baton.domain.views import task_view

log = logging.getLogger(__name__)

SERVICE_NAME = "baton"
QUEUE_GROUP = "baton"

#: Requests waiting for the planner at once, by default (``BATON_PLANNER_CONCURRENCY``); never
#: more than half of the requests in flight, so a silent planner cannot stop other work.
PLANNER_CONCURRENCY = 64

T = TypeVar("T")


def package_version() -> str:
    try:
        return importlib.metadata.version("baton")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class Queries(Protocol):
    """The read side the service answers queries from (``projections.Projections``)."""

    def catch_up(self) -> int: ...

    def active(self, session_id: str) -> dict[str, Any] | None: ...

    def task(self, task_id: str) -> dict[str, Any]: ...

    def tasks(
        self, status: str | None, session_id: str | None, limit: int, after: str | None
    ) -> dict[str, Any]: ...

    def queue(self, session_id: str | None, limit: int) -> dict[str, Any]: ...

    def history(self, task_id: str, version: int | None = None) -> dict[str, Any]: ...


class GroupCommitter:
    """Applies commands in groups: whatever arrived while the previous group was being saved
    goes into the next transaction (``BatonApp.handle_batch``), so commands for different tasks
    proceed together and the store sees one write per group rather than one per command."""

    def __init__(
        self, app: BatonApp, executor: Executor, *, writers: int = 1, max_group: int = 256
    ) -> None:
        self.app = app
        self.executor = executor
        self.writers = writers
        self.max_group = max_group
        self._queue: asyncio.Queue[tuple[c.Command, str | None, asyncio.Future[Any]]] = (
            asyncio.Queue()
        )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write()) for _ in range(self.writers)]

    async def stop(self) -> None:
        """Stops the writers; call once nothing is submitted any more."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def submit(self, command: c.Command, command_id: str | None) -> Any:
        """The reply to ``command`` once its group committed; raises its error."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((command, command_id, future))
        return await future

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            while len(group) < self.max_group and not self._queue.empty():
                group.append(self._queue.get_nowait())
            requests = [(command, cid) for command, cid, _ in group]
            try:
                results = await loop.run_in_executor(self.executor, self.app.handle_batch, requests)
            except asyncio.CancelledError:
                for _, _, future in group:
                    if not future.done():
                        future.set_exception(BatonError("the service stopped"))
                raise
            except Exception as error:  # the whole group failed: each command gets the error
                results = [error] * len(group)
            for (_, _, future), result in zip(group, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def _header_bytes(headers: Mapping[str, str]) -> int:
    """What headers add to a message on the wire (``NATS/1.0`` line, ``key: value`` lines)."""
    return 12 + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())


#: Failures of a store (SQLite file locked or full, PostgreSQL gone): answered 503.
STORE_ERRORS = (sqlite3.Error, psycopg.Error, PersistenceError)


class InternalError(BatonError):
    """An unexpected exception: a bug (500). The traceback is in the service's log."""


class BatonService:
    """Serves every subject of the contract under ``prefix`` as the micro service ``baton``."""

    def __init__(
        self,
        nc: Client,
        app: BatonApp,
        queries: Queries,
        *,
        prefix: str = "baton",
        planner: NatsPlanner | None = None,
        executor: Executor | None = None,
        on_change: Iterable[Callable[[], None]] = (),
        max_in_flight: int = 512,
        writers: int = 1,
        planner_concurrency: int = PLANNER_CONCURRENCY,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.nc = nc
        self.metrics = metrics or ServiceMetrics()
        """True per-endpoint counts (``$SRV.STATS``) and the instance's figures."""
        self.app = app
        self.queries = queries
        self.prefix = prefix
        self.planner = planner or NatsPlanner(nc, prefix)
        self._own_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(8, thread_name_prefix="baton-service")
        self.on_change = list(on_change)
        self.committer = GroupCommitter(app, self.executor, writers=writers)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: set[asyncio.Task[None]] = set()
        self.planner_limit = max(1, min(planner_concurrency, max_in_flight // 2))
        """Requests that may wait for the planner at once; more get 503 at once."""
        self._planner_slots = asyncio.Semaphore(self.planner_limit)
        self.refused = 0
        """Requests dropped unanswered because their reply subject is not a client's."""
        self.service: Service | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribes every endpoint (queue group ``baton``) and the ``$SRV`` verbs."""
        service = await self.metrics.add_service(
            self.nc,
            name=SERVICE_NAME,
            version=package_version(),
            description="Baton: task and step lifecycles for agents",
            queue_group=QUEUE_GROUP,
            metadata={"prefix": self.prefix},
        )
        self.service = service
        self._guard_verbs(service)
        self.learn_message_limit()
        self.committer.start()
        for row in contract.SERVED:
            await service.add_endpoint(
                name=row.endpoint,
                subject=row.address(self.prefix),
                handler=partial(self._accept, row.name),
                metadata={"kind": row.kind},
            )
        await flush_subscriptions(self.nc)

    async def stop(self) -> None:
        """Stops accepting requests, then waits for the ones in flight to be answered."""
        if self.service is not None:
            await self.service.stop()
            self.service = None
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        await self.committer.stop()
        if self._own_executor:
            self.executor.shutdown(wait=True)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def max_message_bytes(self) -> int:
        """The largest message the NATS server carries (``max_payload`` from its INFO)."""
        return int(self.nc.max_payload)

    def learn_message_limit(self) -> None:
        """Lets the application refuse (413) a command whose events or reply would not fit;
        called at start and after each reconnection (the server's limit may differ)."""
        if hasattr(self.app, "max_message_bytes"):
            self.app.max_message_bytes = self.max_message_bytes

    # -- requests --------------------------------------------------------------------------
    async def _accept(self, subject: str, request: Request) -> None:
        why = self.foreign_reply(request._msg.reply)
        if why is not None:
            # Answering would let a client write into Baton's streams or JetStream's API with
            # Baton's rights: the request is dropped, neither executed nor answered.
            self.refused += 1
            log.warning(
                "%s.%s: refused a request whose reply subject %r is %s",
                self.prefix,
                subject,
                request._msg.reply[:100],
                why,
            )
            return
        started = time.perf_counter_ns()
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._answer(subject, request, started))
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()

    async def _answer(self, subject: str, request: Request, started: int) -> None:
        logs.bind(subject=request.subject)
        failed: BatonError | None = None
        try:
            reply = await self.execute(subject, request.data, request.headers or {})
        except BatonError as error:
            failed = error
            await self._respond_error(request, error)
        except STORE_ERRORS as error:
            # The views' store (or the event store outside a command) failed: not a bug.
            log.warning("%s.%s: the store failed: %s", self.prefix, subject, error)
            failed = StoreUnavailable(f"the store failed: {error}; nothing was changed")
            await self._respond_error(request, failed)
        except Exception as error:
            log.exception("%s.%s failed", self.prefix, subject)
            failed = InternalError(f"internal error ({type(error).__name__}); see the service log")
            await self._respond_error(request, failed)
        else:
            if len(reply) > self.max_message_bytes:
                failed = self._too_big(subject, len(reply))
                await self._respond_error(request, failed)
                return
            try:
                await request.respond(reply)
            except MaxPayloadError:  # the server's limit changed (a reconnect elsewhere)
                failed = self._too_big(subject, len(reply))
                await self._respond_error(request, failed)
            except Exception as error:
                log.warning("could not reply on %s.%s", self.prefix, subject, exc_info=True)
                failed = InternalError(f"the reply could not be sent ({type(error).__name__})")
        finally:
            row = contract.BY_NAME.get(subject)
            kind = row.kind if row is not None else "query"
            outcome = None if failed is None else (failed.code, failed.message)
            self.metrics.observe(request.subject, kind, started, outcome)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "answered in %.1f ms%s",
                    (time.perf_counter_ns() - started) / 1e6,
                    "" if failed is None else f" with error {failed.code}",
                )

    def _guard_verbs(self, service: Service) -> None:
        """The same refusal for ``$SRV.PING|INFO|STATS``, which nats.micro answers itself: their
        handlers are wrapped where the subscriptions call them."""
        for sub in service._subscriptions.values():
            handler = sub._cb
            if handler is not None:
                sub._cb = partial(self._verb, handler)

    async def _verb(self, handler: Callable[[Msg], Awaitable[None]], msg: Msg) -> None:
        why = self.foreign_reply(msg.reply)
        if why is None:
            await handler(msg)
            return
        self.refused += 1
        log.warning(
            "%s: refused a request whose reply subject %r is %s", msg.subject, msg.reply[:100], why
        )

    def foreign_reply(self, reply: str) -> str | None:
        """Why Baton must not send a reply to ``reply`` (None when it may): a subject under
        Baton's own prefix (its commands, ``trigger.>`` and ``progress.>`` streams) or a
        ``$`` subject (``$JS.`` JetStream's API, ``$SYS.``, ``$KV.``, ...)."""
        if not reply:
            return None  # a publish without a reply: nothing will be sent
        if reply.startswith("$"):
            return "a system subject"
        if reply == self.prefix or reply.startswith(f"{self.prefix}."):
            return "under Baton's own prefix"
        return None

    def _too_big(self, subject: str, size: int) -> TooLarge:
        limit = self.max_message_bytes
        row = contract.BY_NAME.get(subject)
        applied = row is not None and row.kind == "command"
        if applied:
            hint = "the command was applied; read its result with query.task"
        else:
            hint = "ask for less (a smaller limit, or one task)"
        log.error(
            "%s.%s: the reply is %d bytes, over the %d a message may carry; answered 413",
            self.prefix,
            subject,
            size,
            limit,
        )
        return TooLarge(
            f"the reply is {size} bytes, over the {limit} a NATS message may carry here; {hint}",
            details={"size": size, "limit": limit, "applied": applied},
        )

    async def _respond_error(self, request: Request, error: BatonError) -> None:
        body, headers = error_body(error), error_headers(error)
        if len(body) + _header_bytes(headers) > self.max_message_bytes:
            # Details too big to carry (a huge list of validation errors): the gist only.
            gist = copy.copy(error)
            gist.message, gist.details = error.message[:1000], None
            body, headers = error_body(gist), error_headers(gist)
        try:
            await request.respond(body, headers=headers)
        except Exception:
            log.warning("could not send an error reply", exc_info=True)

    async def execute(self, subject: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        """Answers one request on ``subject`` (without the prefix); raises BatonError."""
        row = contract.BY_NAME.get(subject)
        if row is None or row.kind == "planner":
            raise BatonError(f"no endpoint for {subject!r}")
        if row.kind == "command":
            msg_id = headers.get(MSG_ID_HEADER)
            if msg_id is not None and len(msg_id) > MAX_ID:
                raise InvalidRequest(
                    f"the {MSG_ID_HEADER} header is {len(msg_id)} characters; at most {MAX_ID}",
                    details={"size": len(msg_id), "limit": MAX_ID},
                )
            command = parse(row.request, body)
            assert isinstance(command, c.Command)
            command_id = msg_id or command.command_id
            logs.bind(command_id=command_id, task_id=getattr(command, "task_id", None))
            command = await self._with_plan(command, command_id)
            if isinstance(command, c.ClaimStep) and not (command.task_id or command.session_id):
                # A claim across sessions picks its candidates from the views: bring them up.
                await self._run(self.queries.catch_up)
            reply = await self.committer.submit(command, command_id)
            self._changed()
            return encode(reply)
        query = parse(row.request, body)
        return encode(await self._run(self._query, row, query))

    async def _run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(fn, *args, **kwargs))

    def _changed(self) -> None:
        for wake in self.on_change:
            try:
                wake()
            except Exception:
                log.warning("a wake-up after a command failed", exc_info=True)

    # -- the planner -----------------------------------------------------------------------
    async def _with_plan(self, command: c.Command, command_id: str | None) -> c.Command:
        """The command with a plan from the planner, when it needs one and has none."""
        if isinstance(command, c.CreateTask | c.ReplanTask):
            needed = command.plan is None
        elif isinstance(command, c.NextStep):
            needed = command.replan and command.plan is None
        else:
            needed = False
        if not needed:
            return command
        if command_id:
            known: bool = await self._run(self._is_known, command_id)
            if known:
                return command  # a repeat: the application replies from its record
        if self._planner_slots.locked():
            raise PlannerUnavailable(
                f"{self.planner_limit} requests already wait for the planner; "
                "try again later, or send a plan with the request",
                details={"waiting": self.planner_limit},
            )
        async with self._planner_slots:
            if isinstance(command, c.CreateTask):
                plan = await self.planner.plan(command.task_name, command.task_instruction)
            else:
                assert isinstance(command, c.ReplanTask | c.NextStep)
                view = await self._run(self._task_to_replan, command)
                advance = command.advance_next if isinstance(command, c.ReplanTask) else True
                plan = await self.planner.replan(view, advance)
        return command.model_copy(update={"plan": plan})

    def _is_known(self, command_id: str) -> bool:
        return self.app.reply_for(command_id) is not None

    def _task_to_replan(self, command: c.ReplanTask | c.NextStep) -> dict[str, Any]:
        """The task's view, after the checks the command itself makes (404 / 409 first)."""
        task = self.app.get_task(command.task_id)
        advancing = isinstance(command, c.NextStep) or command.advance_next
        if advancing:
            task.require_running("advance")
        else:
            task.require_not_ended("replan")
        view = task_view(task)
        current = task.first_current()
        if advancing and current is not None:
            # The planner sees the step being advanced past as done: the command completes
            # it before applying the new plan.
            done = dict(view["steps"][current.step_index], status="completed", ready=False)
            view["steps"][current.step_index] = done
            view.pop("current_step", None)
        return view

    # -- queries ---------------------------------------------------------------------------
    def _query(self, row: contract.Subject, query: BaseModel) -> Any:
        """Answers ``query`` with the read side's method the contract table names for it,
        called with the query's fields, once the projections caught up."""
        self.queries.catch_up()
        answer: Callable[..., Any] = getattr(self.queries, row.answer)
        return answer(**query.model_dump())
