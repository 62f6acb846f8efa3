"""The one place that wires Baton together.

Settings -> event store -> BatonApp (with per-task workspaces) -> projections -> NATS connection
(reconnecting forever) -> JetStream streams -> the micro service -> the progress relay, the
trigger scheduler and the projections' background catch-up (``background``: in the publisher
process beside the service, or in this one) and the lease keeper. ``serve()`` runs all of it until
SIGINT / SIGTERM (or a given stop event), then shuts down in order: stop accepting requests,
finish the ones in flight, stop publication, drain the connection, close the store.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import nats
import nats.errors
from nats.aio.client import Client

from baton.adapters import logs
from baton.adapters.background import Publication, PublisherProcess
from baton.adapters.config import (
    SettingError,
    Settings,
    event_store_env,
    has_nats_credentials,
    nats_credentials,
    publisher_settings,
)
from baton.adapters.leases import LeaseKeeper
from baton.adapters.metrics import ServiceMetrics, start_instrumentation
from baton.adapters.natsserver import EmbeddedNatsServer, nats_answers
from baton.adapters.planner import NatsPlanner
from baton.adapters.publication import (
    ProgressRelay,
    StreamPolicy,
    StreamSettingsError,
    TriggerScheduler,
    ensure_streams,
)
from baton.adapters.publication.listener import StoreListener
from baton.adapters.service import BatonService
from baton.adapters.streamids import MessageIds, deployment_secret
from baton.adapters.timedids import timed_ids
from baton.adapters.workspace import DirectoryWorkspace
from baton.domain.services import BatonApp
from baton.projections import Projections

if TYPE_CHECKING:
    from baton.adapters.ui import Dashboard

log = logging.getLogger("baton")

#: Threads running store and projection calls for the service.
SERVICE_THREADS = 8

#: Garbage collector thresholds for the service: the aggregate cache and the projections' LRU
#: hold a few hundred thousand long-lived objects, and with the default (700, 10, 10) the
#: collector walked them over and over (a quarter of the CPU time of a command in process).
GC_THRESHOLDS = (50_000, 20, 100)

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", ""})


def make_projections(app: BatonApp) -> Projections:
    """The read side over the same store as ``app`` (views beside the events)."""
    return Projections(app)


def connect_options(settings: Settings) -> dict[str, Any]:
    """``nats.connect`` options: reconnect forever, and the credentials Settings name."""
    options: dict[str, Any] = {
        "servers": settings.nats_servers,
        # The first URL is the server an instance prefers (list its nearest node first); the
        # others are tried in order when it is down, then the servers the cluster advertises.
        "dont_randomize": True,
        "name": "baton",
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
    }
    options.update(nats_credentials(settings))
    return options


def open_store(settings: Settings) -> tuple[BatonApp, Projections]:
    """The event store and the read side ``settings`` name, without NATS: for the admin commands
    (``baton projections status|rebuild``), which run locally on the store."""
    app = BatonApp(event_store_env(settings))
    return app, make_projections(app)


def _warn_about_trust(settings: Settings, publisher: Settings | None) -> None:
    """Says when the NATS setup lets clients forge what Baton publishes."""
    prefix = settings.subject_prefix
    if not has_nats_credentials(settings):
        log.warning(
            "NATS without credentials: any client of this server may publish on %s.progress.> "
            "and %s.trigger.> (forged progress and triggers) and manage Baton's streams; for "
            "production use a NATS configuration with permissions (README, Securing NATS; "
            "docs/nats-secure.conf)",
            prefix,
            prefix,
        )
    elif publisher is None:
        log.info(
            "answering and publishing on one NATS connection; with BATON_NATS_PUBLISHER_USER "
            "(README, Securing NATS) the service's user needs no right to publish on the streams"
        )


class NatsRefused(RuntimeError):
    """The NATS server refused Baton's credentials: retrying cannot help."""


async def _check_credentials(settings: Settings) -> None:
    """Connects once without reconnecting, so refused credentials end the start with a clear
    error instead of an endless reconnect loop; an unreachable server is left to the
    reconnecting connection (it may come up later)."""
    options = {**connect_options(settings), "allow_reconnect": False, "max_reconnect_attempts": 0}
    errors: list[Exception] = []

    async def remember(error: Exception) -> None:
        errors.append(error)

    try:
        probe = await nats.connect(**options, error_cb=remember)
    except Exception as failure:  # nats-py raises several kinds here; look for auth ones
        errors.append(failure)
    else:
        await probe.close()
        return
    for seen in errors:
        text = str(seen).lower()
        if isinstance(seen, nats.errors.AuthorizationError) or "authorization" in text:
            raise NatsRefused(
                f"the NATS server at {settings.nats_url} refused Baton's credentials ({seen}); "
                "check BATON_NATS_USER/PASSWORD, BATON_NATS_TOKEN, BATON_NATS_CREDS or "
                "BATON_NATS_NKEY_SEED"
            ) from None


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
        self.publisher_nc: Client | None = None
        """The connection that publishes to the streams (``nc`` unless BATON_NATS_PUBLISHER_*)."""
        self.service: BatonService | None = None
        self.publication: Publication | None = None
        """The relay, scheduler and views' catch-up, when they run in this process."""
        self.publisher_process: PublisherProcess | None = None
        """The process they run in otherwise (``BATON_PUBLISHER_PROCESS``)."""
        self.dashboard: Dashboard | None = None
        self.metrics = ServiceMetrics()
        self._stop_instrumentation: Callable[[], Any] | None = None
        self.executor = ThreadPoolExecutor(SERVICE_THREADS, thread_name_prefix="baton")
        self._stop_leases = asyncio.Event()
        self._lease_keeper: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def relay(self) -> ProgressRelay | None:
        return self.publication.relay if self.publication is not None else None

    @property
    def scheduler(self) -> TriggerScheduler | None:
        return self.publication.scheduler if self.publication is not None else None

    @property
    def listener(self) -> StoreListener | None:
        return self.publication.listener if self.publication is not None else None

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
        # On PostgreSQL, instances starting together create the schema in turn (a lock).
        self.app = app = await self._in_thread(
            lambda: BatonApp(env, workspace=workspace, default_lease_s=settings.claim_lease_s)
        )
        app.timed_ids = await self._in_thread(timed_ids, app.recorder, settings.timed_ids)
        self.projections = await self._in_thread(make_projections, app)
        app.ready_work = self.projections
        caught = await self._in_thread(self.projections.catch_up)
        log.info("projections caught up (%d events applied)", caught)

        await _check_credentials(settings)
        self.nc = nc = await nats.connect(
            **connect_options(settings),
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
        )
        publisher = publisher_settings(settings)
        if publisher is not None:
            # Streams on a connection of their own: the service's connection only answers.
            await _check_credentials(publisher)
            self.publisher_nc = await nats.connect(
                **{**connect_options(publisher), "name": "baton-publisher"},
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
        else:
            self.publisher_nc = nc
        _warn_about_trust(settings, publisher)
        js = self.publisher_nc.jetstream()
        policy = StreamPolicy.from_settings(settings)
        await ensure_streams(js, settings.subject_prefix, policy)
        wakes: tuple[Callable[[], None], ...]
        if settings.publisher_process:
            self.publisher_process = PublisherProcess(settings)
            await self.publisher_process.start()
            wakes = (self.publisher_process.wake,)
        else:
            secret = await self._in_thread(deployment_secret, app.recorder)
            self.publication = Publication(app, self.projections, js, settings, MessageIds(secret))
            self.publication.start()
            wakes = (self.publication.relay.wake, self.publication.scheduler.wake)
        self.leases = LeaseKeeper(
            app,
            self.projections,
            self._in_thread,
            idempotency_window_s=settings.idempotency_window_s,
            catch_up=not settings.publisher_process,
        )
        self._lease_keeper = asyncio.get_running_loop().create_task(
            self.leases.run(self._stop_leases), name="lease-keeper"
        )

        self.service = BatonService(
            nc,
            app,
            self.projections,
            prefix=settings.subject_prefix,
            planner=NatsPlanner(nc, settings.subject_prefix, settings.planner_timeout_s),
            planner_concurrency=settings.planner_concurrency,
            executor=self.executor,
            on_change=wakes,
            metrics=self.metrics,
        )
        self._stop_instrumentation = await start_instrumentation(
            self.metrics, self, settings.metrics_addr
        )
        await self.service.start()
        log.info(
            "listening on %s, subjects %s.>, queue group baton",
            _redact(nc.connected_url.geturl() if nc.connected_url else settings.nats_url),
            settings.subject_prefix,
        )
        if settings.ui_addr:
            from baton.adapters.ui import start_dashboard  # a client, on a connection of its own

            self.dashboard = await start_dashboard(settings)

    async def _on_error(self, error: Exception) -> None:
        log.warning("NATS: %s", str(error) or type(error).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            log.warning("NATS: disconnected; reconnecting")

    async def _on_reconnected(self) -> None:
        where = self.nc.connected_url if self.nc is not None else None
        log.info("NATS: reconnected to %s", where.netloc if where is not None else "?")
        if self.service is not None:  # another server of a cluster may carry less
            self.service.learn_message_limit()
        # Publication resumes by itself; nudge it so it does not wait for its next poll.
        if self.publication is not None:
            self.publication.wake()

    async def _ensure_nats_server(self) -> None:
        url = self.settings.nats_url
        if await self._in_thread(nats_answers, url):
            return
        if len(self.settings.nats_servers) > 1:
            raise RuntimeError(f"no NATS server answers at any of {_redact(url)}")
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        host = parts.hostname or "127.0.0.1"
        if host not in _LOCAL_HOSTS:
            raise RuntimeError(f"no NATS server answers at {_redact(url)}")
        server = EmbeddedNatsServer(
            self.settings.data_dir / "nats",
            host="127.0.0.1" if host in ("", "localhost") else host,
            port=parts.port or 4222,
            own_process_group=True,  # stopped last, by close(), not by the terminal's Ctrl-C
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

    async def _stage(self, what: str, step: Awaitable[Any]) -> None:
        """Runs one step of the shutdown; a failure is logged and the shutdown goes on."""
        try:
            await step
        except Exception:
            log.warning("%s failed", what, exc_info=True)

    async def close(self) -> None:
        """Stops accepting, finishes in-flight commands, stops publication, drains, closes."""
        if self._closed:
            return
        self._closed = True
        if self.dashboard is not None:
            await self._stage("closing the dashboard", self.dashboard.close())
        if self._stop_instrumentation is not None:
            await self._stage("stopping the instrumentation", self._stop_instrumentation())
        if self.service is not None:
            await self._stage("stopping the service", self.service.stop())
        self._stop_leases.set()
        if self._lease_keeper is not None:
            await asyncio.gather(self._lease_keeper, return_exceptions=True)
        if self.publication is not None:
            await self._stage("stopping publication", self.publication.stop())
        if self.publisher_process is not None:
            # After the commands in flight: it publishes what they stored, then exits.
            await self._stage("stopping the publisher process", self.publisher_process.stop())
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception as error:
                log.warning("NATS drain failed: %r", error)
                await self._stage("closing the NATS connection", self.nc.close())
        publisher_nc = self.publisher_nc
        if publisher_nc is not None and publisher_nc is not self.nc and not publisher_nc.is_closed:
            try:
                await publisher_nc.drain()
            except Exception as error:
                log.warning("NATS drain failed (publisher): %r", error)
                await self._stage("closing the publisher's connection", publisher_nc.close())
        self.executor.shutdown(wait=True)
        for closeable in (self.projections, self.app):
            close = getattr(closeable, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.warning("closing %r failed", closeable, exc_info=True)
        if self.embedded is not None:
            # Last: every connection to it is drained by now.
            await asyncio.to_thread(self.embedded.stop)
            log.info("embedded nats-server stopped")
        log.info("stopped")


def _redact(url: str) -> str:
    if "," in url:
        return ",".join(_redact(one.strip()) for one in url.split(","))
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
            tune_gc()
            _tune_switching()
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


def tune_gc() -> None:
    """Fewer collections, and none of what start-up allocated (modules, caches) walked again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


#: How long a thread holds the GIL before another may run (Python's default: 5 ms).
SWITCH_INTERVAL_S = 0.0005


def _tune_switching() -> None:
    """Hands the GIL over every 0.5 ms instead of 5 ms: a reply's thread no longer waits a whole
    5 ms slice behind the projections' and the relay's threads at each hand-off (event loop ->
    executor -> loop). Measured (bench commands, same session): commands/s at 1 / 16 / 100 in
    flight 84 / 308 / 419 with 5 ms, 142 / 411 / 458 with 0.5 ms; 0.1 ms thrashed."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def _stopper(stop: asyncio.Event, sig: signal.Signals) -> Callable[[], None]:
    def handler() -> None:
        log.info("received %s", sig.name)
        stop.set()

    return handler


def main() -> None:
    """``python -m baton.adapters``: serves with the settings of the environment."""
    logs.configure("INFO")
    try:
        asyncio.run(serve(Settings.from_env()))
    except (NatsRefused, SettingError, StreamSettingsError) as error:
        log.error("%s", error)
        raise SystemExit(2) from None


__all__ = ["Baton", "connect_options", "main", "serve"]
