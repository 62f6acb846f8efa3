"""What an instance tells its operator: true per-endpoint counts in ``$SRV.STATS``, the
instance's figures (projection lag, relay backlog, due triggers, lapsing leases) as the stats'
``data``, and, when ``BATON_METRICS_ADDR`` is set, the same on a Prometheus ``/metrics`` page
with command latency histograms.

Why the service's own counts: nats.micro times an endpoint handler and counts what it raises,
but Baton's handlers hand each request to a task and return at once (so requests on one subject
run concurrently). The library would report ~20 µs per request and no errors. Here a request is
counted when its reply (or error reply) has been sent, with the time from its arrival.

The figures need the store, so a sampler reads them in a worker thread every
``SAMPLE_INTERVAL_S`` and ``$SRV.STATS`` / ``/metrics`` answer from the last sample (never a
database call on the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.micro.service import EndpointStats, Service, ServiceConfig, ServiceStats
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from baton.adapters.publication.progress import backlog_reader

log = logging.getLogger(__name__)

#: How often the figures are read from the store.
SAMPLE_INTERVAL_S = 1.0

#: The figures every instance reports, in the order ``baton status`` shows them. A figure whose
#: source does not exist (yet) is reported as None ("absent"), never as a made-up 0.
FIGURES = ("projection_lag", "relay_backlog", "due_triggers", "lapsing_leases")

#: Latency buckets (seconds) of the command and query histograms: a durable SQLite commit is
#: ~0.3 ms, a planner call can take a minute.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60)


@dataclass
class Tally:
    """One endpoint's counts, from the replies actually sent."""

    requests: int = 0
    errors: int = 0
    processing_ns: int = 0
    last_error: str = ""


class ServiceMetrics:
    """Per-endpoint tallies, the instance's sampled figures, and their Prometheus registry."""

    def __init__(self) -> None:
        self.tallies: dict[str, Tally] = {}
        """By the endpoint's full NATS subject (``<prefix>.task.create``)."""
        self.figures: dict[str, Any] = dict.fromkeys(FIGURES)
        self.sources: dict[str, Callable[[], Any]] = {}
        """Figure name -> a function computing it (called in a worker thread)."""
        self.live: dict[str, Callable[[], Any]] = {}
        """Figure name -> a cheap function read at each report (on the event loop)."""
        self.sampled_at: float | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "baton_request_duration_seconds",
            "Time from a request's arrival to its reply being sent, by endpoint and outcome.",
            ["endpoint", "kind", "outcome"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        #: The histogram's child per (endpoint, kind, outcome): ``labels()`` takes a lock and
        #: builds a key on every call, once per request.
        self._latency_of: dict[tuple[str, str, str], Any] = {}
        self.errors = Counter(
            "baton_request_errors",
            "Error replies sent, by endpoint and error code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.gauges = {
            name: Gauge(f"baton_{name}", help_text, registry=self.registry)
            for name, help_text in (
                ("projection_lag", "Events stored but not yet applied to the views."),
                ("relay_backlog", "Events stored but not yet published on the progress stream."),
                ("due_triggers", "Triggers due now and not yet published."),
                ("lapsing_leases", "Claims whose lease has run out and is not yet returned."),
                ("in_flight", "Requests being processed."),
            )
        }

    # -- tallies -------------------------------------------------------------------------------
    def observe(
        self,
        subject: str,
        kind: str,
        started_ns: int,
        error: tuple[int, str] | None = None,
    ) -> None:
        """Counts one request on the NATS ``subject``, answered now; ``error`` is the error
        reply's ``(code, message)``."""
        elapsed = time.perf_counter_ns() - started_ns
        tally = self.tallies.get(subject)
        if tally is None:
            tally = self.tallies[subject] = Tally()
        tally.requests += 1
        tally.processing_ns += elapsed
        endpoint = subject.split(".", 1)[-1]
        if error is not None:
            code, message = error
            tally.errors += 1
            tally.last_error = f"{code}:{message}"
            self.errors.labels(endpoint, str(code)).inc()
        outcome = "ok" if error is None else ("client_error" if error[0] < 500 else "error")
        key = (endpoint, kind, outcome)
        child = self._latency_of.get(key)
        if child is None:
            child = self._latency_of[key] = self.latency.labels(*key)
        child.observe(elapsed / 1e9)

    def endpoint_stats(self, base: EndpointStats) -> EndpointStats:
        """``base`` (nats.micro's own, which only knows its handler) with the true counts."""
        tally = self.tallies.get(base.subject) or Tally()
        base.num_requests = tally.requests
        base.num_errors = tally.errors
        base.last_error = tally.last_error
        base.processing_time = tally.processing_ns
        base.average_processing_time = (
            tally.processing_ns // tally.requests if tally.requests else 0
        )
        return base

    # -- figures -------------------------------------------------------------------------------
    def add_figure(self, name: str, source: Callable[[], Any], *, live: bool = False) -> None:
        """Reports ``name`` from ``source`` (a hook: a figure without one is None/absent).
        ``live`` sources are cheap and read at each report; the others in the sampler's
        thread."""
        (self.live if live else self.sources)[name] = source
        self.figures.setdefault(name, None)

    def sample(self) -> dict[str, Any]:
        """Reads every figure now (blocking: call from a worker thread)."""
        values: dict[str, Any] = {}
        for name, source in self.sources.items():
            try:
                values[name] = source()
            except Exception as error:  # a store down: say so, keep the others
                log.debug("figure %s failed: %r", name, error)
                values[name] = None
        return values

    def update(self, values: dict[str, Any]) -> None:
        self.figures.update(values)
        self.sampled_at = time.time()
        for name, value in self.report().items():
            gauge = self.gauges.get(name)
            if gauge is not None and isinstance(value, int | float):
                gauge.set(value)

    def report(self) -> dict[str, Any]:
        """The figures as last sampled, plus the live ones: the ``data`` of ``$SRV.STATS``."""
        data = dict(self.figures)
        for name, source in self.live.items():
            try:
                data[name] = source()
            except Exception:
                data[name] = None
        data["sampled_at"] = self.sampled_at
        return data

    async def run_sampler(
        self, stop: asyncio.Event, executor: Executor | None, interval: float = SAMPLE_INTERVAL_S
    ) -> None:
        """Samples the figures every ``interval`` seconds until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                self.update(await loop.run_in_executor(executor, self.sample))
            except Exception as error:
                log.debug("sampling figures failed: %r", error)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every metric (figures refreshed from live ones)."""
        for name, value in self.report().items():
            gauge = self.gauges.get(name)
            if gauge is not None and isinstance(value, int | float):
                gauge.set(value)
        return bytes(generate_latest(self.registry))

    # -- the micro service ---------------------------------------------------------------------
    async def add_service(self, nc: Client, **config: Any) -> Service:
        """``nats.micro.add_service`` with these metrics in its ``$SRV.STATS``."""
        service = InstrumentedService(nc, ServiceConfig(**config), self)
        await service.start()
        return service


class _Stats(ServiceStats):
    """A stats reply with the instance's figures as its ``data``."""

    data: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["data"] = self.data
        return body


class InstrumentedService(Service):
    """A nats.micro service whose ``$SRV.STATS`` carries the true counts of ``metrics``."""

    def __init__(self, client: Client, config: ServiceConfig, metrics: ServiceMetrics) -> None:
        super().__init__(client, config)
        self.metrics = metrics

    def stats(self) -> ServiceStats:
        stats = super().stats()
        result = _Stats(
            id=stats.id,
            name=stats.name,
            version=stats.version,
            started=stats.started,
            endpoints=[self.metrics.endpoint_stats(e) for e in stats.endpoints],
            metadata=stats.metadata,
        )
        result.data = self.metrics.report()
        for endpoint in result.endpoints:
            endpoint.data = None
        return result


async def serve_metrics(metrics: ServiceMetrics, addr: str) -> Any:
    """Serves ``/metrics`` on ``HOST:PORT``; returns the aiohttp runner (``await
    runner.cleanup()`` stops it). The bound port is ``runner.addresses[0][1]``."""
    from aiohttp import web

    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"BATON_METRICS_ADDR={addr!r}: expected HOST:PORT")

    async def page(request: web.Request) -> web.Response:
        body = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    log.info("metrics on http://%s/metrics", addr)
    return runner


def _count_due_triggers(projections: Any) -> int:
    """Pending, unpublished triggers due now (a COUNT on the views' store; the projections'
    own ``due_trigger_count`` when they have one)."""
    counter = getattr(projections, "due_trigger_count", None)
    if callable(counter):
        return int(counter(time.time()))
    store = projections.store
    with store.read() as cursor:
        cursor.execute(
            store.sql("SELECT COUNT(*) AS n FROM {triggers} WHERE published = 0 AND fire_at <= ?"),
            (time.time(),),
        )
        row = cursor.fetchone()
    return int(row["n"])


def _lapsed_lease_counter(projections: Any) -> Callable[[], int] | None:
    """How to count the lapsing leases: ``projections.lapsing_leases()`` when the projections
    offer it, else a COUNT of the claims whose ``expires_at`` has passed in the views' leases
    table (a claim there is still held: a lapsed one is waiting to be returned), else None."""
    hook = getattr(projections, "lapsing_leases", None)
    if callable(hook):
        return lambda: int(hook())
    store: Any = getattr(projections, "store", None)
    if store is None or "leases" not in (getattr(store, "names", None) or {}):
        return None

    def count() -> int:
        with store.read() as cursor:
            cursor.execute(
                store.sql("SELECT COUNT(*) AS n FROM {leases} WHERE expires_at <= ?"),
                (time.time(),),
            )
            return int(cursor.fetchone()["n"])

    return count


def register_figures(metrics: ServiceMetrics, baton: Any) -> None:
    """The figures of a running ``Baton`` (bootstrap): its projections, relay, scheduler,
    service and connection. ``lapsing_leases`` is reported absent (None) until the projections
    know leases (``_lapsed_lease_counter``)."""
    projections, relay, scheduler = baton.projections, baton.relay, baton.scheduler
    if projections is not None:
        metrics.add_figure("projection_lag", lambda: projections.lag()["behind"])
        metrics.add_figure("due_triggers", lambda: _count_due_triggers(projections))
        lapsing = _lapsed_lease_counter(projections)
        if lapsing is not None:
            metrics.add_figure("lapsing_leases", lapsing)
    if relay is None:  # it runs in the publisher process: its position is read from the store
        if baton.app is not None:
            prefix = baton.settings.subject_prefix
            metrics.add_figure("relay_backlog", backlog_reader(baton.app, prefix))
    else:
        metrics.add_figure("relay_backlog", relay.backlog)
        metrics.add_figure("progress_published", lambda: relay.published, live=True)
        metrics.add_figure("relay_failures", lambda: relay.failures, live=True)
    if scheduler is not None:
        metrics.add_figure("triggers_published", lambda: scheduler.published, live=True)
        metrics.add_figure("scheduler_failures", lambda: scheduler.failures, live=True)
    metrics.add_figure(
        "in_flight", lambda: baton.service.in_flight if baton.service else 0, live=True
    )

    def server() -> str | None:
        nc = baton.nc
        url = nc.connected_url if nc is not None and nc.is_connected else None
        return None if url is None else str(url.netloc.rsplit("@", 1)[-1])

    metrics.add_figure("nats_server", server, live=True)


async def start_instrumentation(
    metrics: ServiceMetrics, baton: Any, addr: str | None
) -> Callable[[], Any]:
    """Registers ``baton``'s figures, starts the sampler (and ``/metrics`` on ``addr``);
    returns the coroutine function that stops them."""
    register_figures(metrics, baton)
    stop = asyncio.Event()
    metrics.update(await asyncio.get_running_loop().run_in_executor(baton.executor, metrics.sample))
    sampler = asyncio.get_running_loop().create_task(
        metrics.run_sampler(stop, baton.executor), name="baton-metrics"
    )
    runner = await serve_metrics(metrics, addr) if addr else None

    async def close() -> None:
        stop.set()
        await asyncio.gather(sampler, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()

    return close


__all__ = [
    "FIGURES",
    "InstrumentedService",
    "SAMPLE_INTERVAL_S",
    "ServiceMetrics",
    "Tally",
    "register_figures",
    "serve_metrics",
    "start_instrumentation",
]
