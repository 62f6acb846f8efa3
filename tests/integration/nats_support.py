"""Helpers for the tests of the NATS service: a Baton running in the test's event loop on the
session's nats-server, under a subject prefix of its own, and a client for it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nats
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request

from baton.adapters.bootstrap import Baton
from baton.adapters.client import BatonClient
from baton.adapters.config import Settings
from baton.adapters.service import BatonService
from baton.adapters.subscriptions import flush_subscriptions
from baton.domain.services import BatonApp


def new_prefix() -> str:
    """A subject prefix no other test uses, so tests on one server never cross-talk."""
    return f"t{uuid.uuid4().hex[:12]}"


@dataclass
class Running:
    """A Baton under test: its runtime (app, projections, service) and a client of it."""

    baton: Baton
    client: BatonClient
    settings: Settings

    @property
    def app(self) -> BatonApp:
        assert self.baton.app is not None
        return self.baton.app

    @property
    def nc(self) -> Client:
        return self.client.nc

    @property
    def prefix(self) -> str:
        return self.settings.subject_prefix

    def notifications(self) -> int:
        """The last notification id of the event store: what a rejected command must not move."""
        return int(self.app.recorder.max_notification_id() or 0)

    async def raw(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[dict[str, str], Any]:
        """A request as any NATS client sends it: the reply's headers and decoded body."""
        msg = await self.nc.request(f"{self.prefix}.{subject}", body, timeout=10, headers=headers)
        return dict(msg.headers or {}), json.loads(msg.data)


def settings_for(nats_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "data_dir": data_dir,
        "subject_prefix": new_prefix(),
        "planner_timeout_s": 2.0,
        **overrides,
    }
    return Settings(**values)


@asynccontextmanager
async def running_baton(settings: Settings, *, timeout: float = 10.0) -> AsyncIterator[Running]:
    """Starts Baton with ``settings`` and a client on its own connection; stops both after."""
    baton = await Baton.start(settings)
    try:
        client = await BatonClient.connect(
            settings.nats_url, prefix=settings.subject_prefix, timeout=timeout
        )
        try:
            yield Running(baton, client, settings)
        finally:
            await client.close()
    finally:
        await baton.close()


class StartBaton(Protocol):
    """The ``start_baton`` fixture: starts a Baton with these ``Settings`` fields and client
    timeout, stopped after the test."""

    async def __call__(self, *, timeout: float = ..., **overrides: Any) -> Running: ...


@asynccontextmanager
async def side_service(
    baton: Running, *, app: Any = None, queries: Any = None
) -> AsyncIterator[str]:
    """A ``BatonService`` of its own on ``baton``'s connection, under a new subject prefix, with
    another application or read side (a fake) if given; yields its prefix, stops it after."""
    prefix = new_prefix()
    service = BatonService(
        baton.baton.nc,
        app if app is not None else baton.app,
        queries if queries is not None else baton.baton.projections,
        prefix=prefix,
    )
    await service.start()
    try:
        yield prefix
    finally:
        await service.stop()


async def rejected(
    baton: Running, subject: str, body: bytes | dict[str, Any], code: int, reason: str
) -> dict[str, Any]:
    """Sends a request that must fail with ``code``/``reason``; checks the headers against the
    body and that the event store did not move. Returns the error object."""
    before = baton.notifications()
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers, reply = await baton.raw(subject, data)
    error = reply["error"]
    assert error["code"] == code, error
    assert error["reason"] == reason, error
    assert error["message"]
    assert headers["Nats-Service-Error-Code"] == str(code)
    assert headers["Nats-Service-Error"] == " ".join(error["message"].split())
    assert baton.notifications() == before
    return dict(error)


PlannerHandler = Callable[[dict[str, Any]], Awaitable[Any]]


@asynccontextmanager
async def planner_service(
    nats_url: str,
    prefix: str,
    *,
    plan: PlannerHandler | None = None,
    replan: PlannerHandler | None = None,
) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    """A planner micro service on ``<prefix>.planner.plan|replan``; yields the requests it got.

    A handler returns what the planner answers: a dict or list is sent as JSON, bytes as they are.
    """
    nc = await nats.connect(nats_url)
    seen: list[tuple[str, dict[str, Any]]] = []

    def endpoint(verb: str, handler: PlannerHandler) -> Callable[[Request], Awaitable[None]]:
        async def answer(request: Request) -> None:
            payload = json.loads(request.data)
            seen.append((verb, payload))
            reply = await handler(payload)
            data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            await request.respond(data)

        return answer

    service = await add_service(nc, name="test-planner", version="0.0.1")
    try:
        if plan is not None:
            await service.add_endpoint(
                name="plan", subject=f"{prefix}.planner.plan", handler=endpoint("plan", plan)
            )
        if replan is not None:
            await service.add_endpoint(
                name="replan",
                subject=f"{prefix}.planner.replan",
                handler=endpoint("replan", replan),
            )
        await flush_subscriptions(nc)
        yield seen
    finally:
        await service.stop()
        await nc.drain()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
