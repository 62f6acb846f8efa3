"""The dashboard's NATS side: its own client connection, the live feed and instance discovery.

Everything here is a client of the public contract: queries through ``BatonClient``, the
progress and trigger streams through ephemeral ordered JetStream consumers (new messages only),
and ``$SRV.INFO`` / ``$SRV.STATS`` for the instances. The connection is retried forever, from
the first attempt on, so the dashboard serves (and says NATS is unreachable) before a
deployment is up, and recovers by itself when NATS comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from baton.adapters.client import BatonClient
from baton.adapters.config import Settings, nats_credentials

log = logging.getLogger("baton.ui")

#: The micro service name of the contract (``$SRV.INFO.baton``).
SERVICE_NAME = "baton"
#: How long to wait between attempts while no subscription to a stream could be made.
RESUBSCRIBE_S = 2.0
#: How often to check that the stream consumers still exist on the server.
CONSUMER_CHECK_S = 15.0


def slim_event(event: dict[str, Any]) -> dict[str, Any]:
    """What the browser needs of a progress event: its identity and words, without ``data``
    (a ``Created`` event carries the whole plan). The session of a created task is kept, so a
    list filtered by session can tell whether a new task belongs to it."""
    slim: dict[str, Any] = {
        key: event[key]
        for key in ("task_id", "type", "version", "timestamp", "step_id", "display_message")
        if key in event
    }
    data = event.get("data")
    if isinstance(data, dict):
        for key in ("session_id", "status"):
            if isinstance(data.get(key), str):
                slim[key] = data[key]
    return slim


class LiveHub:
    """Fans the live feed out to the browsers' event streams.

    Each listener gets a bounded queue; a listener too slow to keep up loses its backlog and
    is told to resynchronise (refetch) instead, so one stuck browser never holds memory.
    """

    def __init__(self, backlog: int = 2000) -> None:
        self.backlog = backlog
        self._listeners: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.status: dict[str, Any] = {"nats": "connecting"}

    def listen(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.backlog)
        self._listeners.add(queue)
        return queue

    def forget(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._listeners.discard(queue)

    def send(self, item: dict[str, Any]) -> None:
        for queue in self._listeners:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"kind": "resync"})

    def set_status(self, **status: Any) -> None:
        self.status = {**self.status, **status}
        self.send({"kind": "status", "status": dict(self.status)})

    def close(self) -> None:
        """Ends every listener's stream (a ``None`` in its queue)."""
        for queue in self._listeners:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)


class NatsLink:
    """The dashboard's NATS connection, its live subscriptions, and its queries."""

    def __init__(self, settings: Settings, hub: LiveHub, *, request_timeout: float = 10.0) -> None:
        self.settings = settings
        self.prefix = settings.subject_prefix
        self.hub = hub
        self.request_timeout = request_timeout
        self.nc: Client | None = None
        self.client: BatonClient | None = None
        self._subs: dict[str, Any] = {}
        self._floors: dict[str, int] = {}
        self._runner: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._unreachable_logged = False

    # -- state -------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def following(self) -> bool:
        """Whether both streams are followed (events from now on reach the browsers)."""
        return self.connected and len(self._subs) == 2

    @property
    def server(self) -> str:
        """Where the dashboard's NATS connection points (no credentials)."""
        if self.nc is not None and self.nc.connected_url is not None:
            return str(self.nc.connected_url.netloc.rsplit("@", 1)[-1])
        url = self.settings.nats_url
        return url.split("://", 1)[-1].rsplit("@", 1)[-1]

    def start(self) -> None:
        """Connects (retrying forever) and keeps the live subscriptions up, in the background."""
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="baton-ui-nats")

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:
                await self.nc.close()

    # -- connection --------------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "servers": self.settings.nats_servers,
            "name": "baton-ui",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "connect_timeout": 2,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        options.update(nats_credentials(self.settings))
        return options

    async def _connect(self) -> None:
        while self.nc is None and not self._closing:
            try:
                self.nc = await nats.connect(**self._options())
            except Exception as error:
                if not self._unreachable_logged:
                    log.warning(
                        "dashboard: no NATS at %s yet (%s); retrying",
                        self.server,
                        str(error) or type(error).__name__,
                    )
                    self._unreachable_logged = True
                self.hub.set_status(nats="disconnected", server=self.server)
                await asyncio.sleep(1.0)
        if self.nc is not None:
            self.client = BatonClient(self.nc, self.prefix, self.request_timeout)
            log.info("dashboard: connected to NATS at %s", self.server)
            self.hub.set_status(nats="connected", server=self.server)

    async def _on_error(self, error: Exception) -> None:
        log.debug("dashboard NATS: %s", str(error) or type(error).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("dashboard: NATS connection lost; reconnecting")
            self.hub.set_status(nats="disconnected", server=self.server)

    async def _on_reconnected(self) -> None:
        log.info("dashboard: NATS reconnected to %s", self.server)
        # The ephemeral consumers may be gone with the server: make them anew, and have every
        # page refetch what it shows (events during the outage were not followed).
        await self._drop_subscriptions()
        self._wake.set()
        self.hub.set_status(nats="connected", server=self.server)
        self.hub.send({"kind": "resync"})

    # -- live feed ---------------------------------------------------------------------------
    async def _run(self) -> None:
        await self._connect()
        next_check = time.monotonic() + CONSUMER_CHECK_S
        while not self._closing:
            if self.connected:
                for name in ("progress", "trigger"):
                    if name not in self._subs:
                        await self._subscribe(name)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + CONSUMER_CHECK_S
                    await self._check_consumers()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RESUBSCRIBE_S)

    async def _subscribe(self, name: str) -> None:
        assert self.nc is not None
        js = self.nc.jetstream()
        subject = f"{self.prefix}.{name}.>"
        try:
            stream = await js.find_stream_name_by_subject(subject)
            # Messages at or below the stream's last sequence now are history: a consumer that
            # resets before its first message would otherwise replay the stream from the start.
            self._floors[name] = int((await js.stream_info(stream)).state.last_seq)
            self._subs[name] = await js.subscribe(
                subject,
                stream=stream,
                cb=self._handler(name),
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.NEW,
                idle_heartbeat=2.0,
            )
        except nats.js.errors.NotFoundError:
            log.debug("dashboard: no stream holds %s yet", subject)
        except (nats.errors.Error, TimeoutError, OSError) as error:
            log.debug("dashboard: cannot follow %s yet: %r", subject, error)

    def _handler(self, name: str) -> Callable[[Any], Any]:
        async def on_message(msg: Any) -> None:
            try:
                if msg.metadata.sequence.stream <= self._floors.get(name, 0):
                    return
                body = json.loads(msg.data)
            except (ValueError, AttributeError, TypeError):
                return
            if not isinstance(body, dict):
                return
            if name == "progress":
                self.hub.send({"kind": "event", "event": slim_event(body)})
            else:
                self.hub.send({"kind": "trigger", "trigger": body})

        return on_message

    async def _drop_subscriptions(self) -> None:
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            await _quietly(sub.unsubscribe())

    async def _check_consumers(self) -> None:
        for name, sub in list(self._subs.items()):
            try:
                await sub.consumer_info()
            except nats.js.errors.NotFoundError:
                log.info("dashboard: the %s consumer is gone; following anew", name)
                self._subs.pop(name, None)
                await _quietly(sub.unsubscribe())
                self.hub.send({"kind": "resync"})
            except (nats.errors.Error, TimeoutError, OSError):
                pass

    # -- discovery ---------------------------------------------------------------------------
    async def instances(self, window: float = 1.0, quiet: float = 0.25) -> list[dict[str, Any]]:
        """Every instance of the service under this prefix: ``$SRV.INFO`` joined with
        ``$SRV.STATS`` by instance id, each ``{id, version, ..., endpoints: [...]}``."""
        infos, stats = await asyncio.gather(
            self._gather(f"$SRV.INFO.{SERVICE_NAME}", window, quiet),
            self._gather(f"$SRV.STATS.{SERVICE_NAME}", window, quiet),
        )
        stats_by_id = {s.get("id"): s for s in stats}
        found: list[dict[str, Any]] = []
        for info in infos:
            endpoints = info.get("endpoints") or []
            if not any(str(e.get("subject", "")).startswith(f"{self.prefix}.") for e in endpoints):
                continue  # another deployment's instance, under another prefix
            stat = stats_by_id.get(info.get("id"), {})
            stat_by_name = {e.get("name"): e for e in stat.get("endpoints") or []}
            found.append(
                {
                    **{k: v for k, v in info.items() if k not in ("type", "endpoints")},
                    "started": stat.get("started"),
                    "endpoints": [{**e, **stat_by_name.get(e.get("name"), {})} for e in endpoints],
                }
            )
        found.sort(key=lambda i: (str(i.get("started") or ""), str(i.get("id"))))
        return found

    async def _gather(self, subject: str, window: float, quiet: float) -> list[dict[str, Any]]:
        """Every reply to one request within ``window`` seconds (ending ``quiet`` seconds after
        the last one): several instances answer ``$SRV`` requests."""
        assert self.nc is not None
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        async def collect(msg: Any) -> None:
            await replies.put(msg.data)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=collect)
        found: list[dict[str, Any]] = []
        try:
            await self.nc.publish(subject, b"", reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + window
            wait = window
            while True:
                try:
                    data = await asyncio.wait_for(replies.get(), max(0.0, wait))
                except TimeoutError:
                    break
                with contextlib.suppress(ValueError):
                    body = json.loads(data)
                    if isinstance(body, dict):
                        found.append(body)
                wait = min(quiet, deadline - loop.time())
        finally:
            await sub.unsubscribe()
        return found


async def _quietly(awaitable: Any) -> None:
    with contextlib.suppress(Exception):
        await awaitable
