"""The one place that wires Baton together.

Settings -> event store -> BatonApp (with per-task workspaces) -> projections -> NATS connection
(reconnecting forever) -> JetStream streams -> the micro service -> the progress relay, the
trigger scheduler and the projections' background catch-up. ``serve()`` runs all of it until
SIGINT / SIGTERM (or a given stop event), then shuts down in order: stop accepting requests,
finish the ones in flight, stop publication, drain the connection, close the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client

from adapters.config import Settings, event_store_env
from adapters.natsserver import EmbeddedNatsServer, nats_answers
from adapters.planner import NatsPlanner
from adapters.publisher import ProgressRelay, TriggerScheduler, ensure_streams
from adapters.service import BatonService
from adapters.workspace import DirectoryWorkspace
from domain.services import BatonApp
from projections import Projections

log = logging.getLogger("baton")

#: How often the projections' background thread applies new events (queries catch up anyway).
PROJECTION_INTERVAL_S = 0.2
#: Threads running store and projection calls for the service.
SERVICE_THREADS = 8

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", ""})


def make_projections(app: BatonApp) -> Projections:
    """The read side over the same store as ``app`` (views beside the events)."""
    return Projections(app)


def connect_options(settings: Settings) -> dict[str, Any]:
    """``nats.connect`` options: reconnect forever, and the credentials Settings name."""
    options: dict[str, Any] = {
        "servers": [settings.nats_url],
        "name": "baton",
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
    }
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
    if settings.nats_token is not None:
        options["token"] = settings.nats_token
    if settings.nats_creds is not None:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_nkey_seed is not None:
        options["nkeys_seed"] = settings.nats_nkey_seed
    if settings.nats_tls_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=settings.nats_tls_ca)
    return options


class Baton:
    """A running Baton: store, projections, NATS connection, service and publication.

    ``await Baton.start(settings)`` brings it up; ``await baton.close()`` takes it down in order.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: EmbeddedNatsServer | None = None
        self.app: BatonApp | None = None
        self.projections: Projections | None = None
        self.nc: Client | None = None
        self.service: BatonService | None = None
        self.relay: ProgressRelay | None = None
        self.scheduler: TriggerScheduler | None = None
        self.executor = ThreadPoolExecutor(SERVICE_THREADS, thread_name_prefix="baton")
        self._stop_publication = asyncio.Event()
        self._publication: list[asyncio.Task[None]] = []
        self._stop_projections = threading.Event()
        self._projection_thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    async def start(cls, settings: Settings) -> Baton:
        """Starts everything; on a failure, closes what was started and raises."""
        baton = cls(settings)
        try:
            await baton._start()
        except BaseException:
            await baton.close()
            raise
        return baton

    async def _start(self) -> None:
        settings = self.settings
        await self._ensure_nats_server()
        env = event_store_env(settings)
        where = _redact(settings.postgres_url) if settings.postgres_url else env["SQLITE_DBNAME"]
        log.info("using store %s", where)
        workspace = DirectoryWorkspace(settings.workspaces, settings.keep_workspaces)
        self.app = app = await self._in_thread(BatonApp, env, workspace=workspace)
        self.projections = await self._in_thread(make_projections, app)
        app.ready_work = self.projections
        caught = await self._in_thread(self.projections.catch_up)
        log.info("projections caught up (%d events applied)", caught)

        self.nc = nc = await nats.connect(
            **connect_options(settings),
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        js = nc.jetstream()
        await ensure_streams(js, settings.subject_prefix)
        self.relay = ProgressRelay(app, js, settings.subject_prefix)
        self.scheduler = TriggerScheduler(self.projections, js, settings.subject_prefix)
        loop = asyncio.get_running_loop()
        self._publication = [
            loop.create_task(self.relay.run(self._stop_publication), name="progress-relay"),
            loop.create_task(self.scheduler.run(self._stop_publication), name="trigger-scheduler"),
        ]
        self._projection_thread = threading.Thread(
            target=self.projections.run,
            args=(self._stop_projections, PROJECTION_INTERVAL_S),
            name="baton-projections",
            daemon=True,
        )
        self._projection_thread.start()

        self.service = BatonService(
            nc,
            app,
            self.projections,
            prefix=settings.subject_prefix,
            planner=NatsPlanner(nc, settings.subject_prefix, settings.planner_timeout_s),
            executor=self.executor,
            on_change=(self.relay.wake, self.scheduler.wake),
        )
        await self.service.start()
        log.info(
            "listening on %s, subjects %s.>, queue group baton",
            _redact(nc.connected_url.geturl() if nc.connected_url else settings.nats_url),
            settings.subject_prefix,
        )

    async def _on_error(self, error: Exception) -> None:
        log.warning("NATS: %s", str(error) or type(error).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("NATS: disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        where = self.nc.connected_url if self.nc is not None else None
        log.info("NATS: reconnected to %s", where.netloc if where is not None else "?")
        # Publication resumes by itself; nudge it so it does not wait for its next poll.
        for publisher in (self.relay, self.scheduler):
            if publisher is not None:
                publisher.wake()

    async def _ensure_nats_server(self) -> None:
        url = self.settings.nats_url
        if await self._in_thread(nats_answers, url):
            return
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        host = parts.hostname or "127.0.0.1"
        if host not in _LOCAL_HOSTS:
            raise RuntimeError(f"no NATS server answers at {_redact(url)}")
        server = EmbeddedNatsServer(
            self.settings.data_dir / "nats",
            host="127.0.0.1" if host in ("", "localhost") else host,
            port=parts.port or 4222,
        )
        await self._in_thread(server.start)
        self.embedded = server
        log.info(
            "no NATS server answered at %s: started an embedded nats-server with JetStream on %s "
            "(store %s)",
            _redact(url),
            server.url,
            server.store_dir,
        )

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        """Stops accepting, finishes in-flight commands, stops publication, drains, closes."""
        if self._closed:
            return
        self._closed = True
        if self.service is not None:
            await self.service.stop()
        self._stop_publication.set()
        if self._publication:
            await asyncio.gather(*self._publication, return_exceptions=True)
        self._stop_projections.set()
        if self._projection_thread is not None:
            await asyncio.to_thread(self._projection_thread.join, 10)
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as error:
                log.warning("NATS drain failed: %r", error)
                await self.nc.close()
        self.executor.shutdown(wait=True)
        for closeable in (self.projections, self.app):
            close = getattr(closeable, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.warning("closing %r failed", closeable, exc_info=True)
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
        log.info("stopped")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Runs Baton until ``stop`` is set, or, when no ``stop`` is given, until SIGINT/SIGTERM.

    ``ready`` is set once requests are served.
    """
    loop = asyncio.get_running_loop()
    own_signals: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, _stopper(stop, sig))
                own_signals.append(sig)
    try:
        baton = await Baton.start(settings)
        try:
            log.info("ready")
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("stopping")
        finally:
            await baton.close()
    finally:
        for sig in own_signals:
            loop.remove_signal_handler(sig)


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        log.info("received %s", sig.name)
        stop.set()

    return handler


def main() -> None:
    """``python -m adapters``: serves with the settings of the environment."""
    logging.basicConfig(
        level=os.environ.get("BATON_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve(Settings.from_env()))


__all__ = ["Baton", "connect_options", "main", "serve"]
