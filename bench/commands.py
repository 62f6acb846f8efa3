"""Benchmark 1 (and 6): commands over NATS at 1, 16 and 100 in flight, against a micro echo.

Baton runs as ``baton serve`` would (``bench.child baton``: ``baton.adapters.bootstrap.serve``) in
its own process on a private nats-server, with a durable store in a temporary data dir (SQLite, or
a fresh PostgreSQL database for benchmark 6). The load generator drives plans of 10 sequential
steps through ``BatonClient``: create, start, next x 10 (12 commands a plan), with N requests in
flight. The baseline is a bare ``nats.micro`` echo endpoint, also in its own process, on the same
server, answered at the same concurrency with a body as large as a create: the ceiling of a Python
NATS responder. Runs alternate between the two so noise hits both.

Single-flight latency: ``task.create`` (a 10-step plan) one request at a time, against the echo's
round trip one at a time with a body as large, alternating run by run; the ratio of the p50s
(goal <= 3) is what a caller waits for durability. For scale, the same runs time a raw durable
write one at a time (``bench.baselines``: the eventsourcing library alone saving a one-event
aggregate per SQLite transaction, in this process, on the same disk): no durable command can
answer sooner than the echo's round trip plus that write, so the report also gives the create's
p50 over that floor, and what is left of it once the floor is taken off."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from baton.adapters.config import event_store_env
from baton.adapters.publication.progress import DEFAULT_MAX_PAYLOAD
from baton.adapters.workspace import DirectoryWorkspace
from baton.domain import commands as c
from baton.domain.services import BatonApp
from bench import baselines
from bench.data import STEPS, plan, settings_for
from bench.harness import (
    COMMANDS_PER_PLAN,
    Child,
    Load,
    baton_env,
    connect_client,
    echo_env,
    echo_requests,
    nats_server,
    plans_through_baton,
    run_async,
    typical_body,
)
from bench.stats import Series, goal, header, ms, note, percentile, ratio

IN_FLIGHT = (1, 16, 100)
#: Requests per run of the single-flight latency comparison.
SINGLE = 200


@dataclass
class Level:
    in_flight: int
    baton: Series
    echo: Series
    p50_ms: Series
    p99_ms: Series
    errors: int = 0

    @property
    def ratio(self) -> float:
        return self.baton.median / self.echo.median if self.echo.median else float("nan")


@dataclass
class Latency:
    """p50 and p99 of ``task.create`` and of the echo, one request at a time, per run."""

    create_p50: Series
    create_p99: Series
    echo_p50: Series
    echo_p99: Series
    save_p50: Series
    """A raw durable write one at a time (``bench.baselines``), the store's share of the floor."""
    inproc_p50: Series
    """The same create through ``BatonApp.handle_batch`` in this process, no NATS: the domain
    and the store's share of a create, apart from the service's loop and the hops."""

    @property
    def ratio(self) -> float:
        return (
            self.create_p50.median / self.echo_p50.median if self.echo_p50.median else float("nan")
        )

    @property
    def floor_ms(self) -> float:
        """The echo's round trip plus one durable write: less than any durable command."""
        return self.echo_p50.median + self.save_p50.median


async def _single_flight(client: Any, nc: Any, runs: int, quick: bool, floor: bool) -> Latency:
    the_plan = plan(STEPS)
    body = typical_body()
    latency = Latency(
        Series("task.create p50, one at a time", "ms"),
        Series("task.create p99, one at a time", "ms"),
        Series("echo round trip p50, one at a time", "ms"),
        Series("echo round trip p99, one at a time", "ms"),
        Series("raw durable save p50, one at a time", "ms"),
        Series("task.create in process p50, one at a time", "ms"),
    )
    n = SINGLE // 2 if quick else SINGLE
    for _ in range(runs):
        if floor:
            latency.save_p50.add(ms(percentile(_raw_saves(n), 0.5)))
            latency.inproc_p50.add(ms(percentile(_in_process_creates(n, the_plan), 0.5)))
        creates: list[float] = []
        for i in range(n):
            start = time.perf_counter()
            await client.create_task(
                task_name=f"single-{i}", task_instruction="bench", plan=the_plan
            )
            creates.append(time.perf_counter() - start)
        echo = await echo_requests(nc, 1, n, body)
        latency.create_p50.add(ms(percentile(creates, 0.5)))
        latency.create_p99.add(ms(percentile(creates, 0.99)))
        latency.echo_p50.add(ms(percentile(echo.latencies, 0.5)))
        latency.echo_p99.add(ms(percentile(echo.latencies, 0.99)))
    return latency


def _each_timed(n: int, call: Callable[[int], object], warm_up: int = 10) -> list[float]:
    """Seconds of each of ``call(0)`` ... ``call(n - 1)``, after ``warm_up`` calls outside the
    clock (imports, a store file's first pages)."""
    for i in range(warm_up):
        call(-1 - i)
    times: list[float] = []
    for i in range(n):
        start = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - start)
    return times


def _raw_saves(n: int) -> list[float]:
    """Seconds of each of ``n`` raw saves (one event, one SQLite transaction each) on a fresh
    store in the benchmarks' directory."""
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp:
        app = baselines.sqlite_app(Path(tmp))
        try:
            return _each_timed(n, lambda i: app.save(baselines.Dot(i)))
        finally:
            app.close()


def _in_process_creates(n: int, the_plan: dict[str, Any]) -> list[float]:
    """Seconds of each of ``n`` creates of ``the_plan`` through ``BatonApp.handle_batch`` (one
    command, with an id, per group commit) on a fresh SQLite store in the benchmarks'
    directory, set up as ``baton serve`` sets it up (a workspace directory per task, replies
    and events bounded by NATS's default 1 MB): what the service's writer thread does for a
    create."""
    with tempfile.TemporaryDirectory(prefix="bench-inproc-") as tmp:
        settings = settings_for(Path(tmp))
        workspace = DirectoryWorkspace(settings.workspaces, settings.keep_workspaces)
        app = BatonApp(event_store_env(settings), workspace=workspace)
        app.max_message_bytes = DEFAULT_MAX_PAYLOAD
        try:

            def create(i: int) -> None:
                command = c.CreateTask.model_validate(
                    {"task_name": f"single-{i}", "task_instruction": "bench", "plan": the_plan}
                )
                app.handle_batch([(command, f"bench-inproc-{i}")])

            return _each_timed(n, create)
        finally:
            app.close()
            workspace.close()


def plans_for(in_flight: int, quick: bool) -> int:
    """Enough plans that each timed run lasts around a second or more on this machine."""
    per_worker = 2 if quick else 4
    return max(in_flight * per_worker, 20 if quick else 50)


async def _measure(
    baton_url: str,
    in_flights: tuple[int, ...],
    runs: int,
    quick: bool,
    with_echo: bool,
    floor: bool,
) -> tuple[list[Level], Latency | None]:
    client = await connect_client(baton_url)
    nc = await nats.connect(baton_url) if with_echo else None
    body = typical_body()
    levels: list[Level] = []
    latency: Latency | None = None
    try:
        # Warm-up outside the clock: connections, caches, first SQLite pages.
        await plans_through_baton(client, 4, 8)
        if nc is not None:
            await echo_requests(nc, 16, 200, body)
        for in_flight in in_flights:
            level = Level(
                in_flight,
                Series(f"Baton commands/s at {in_flight} in flight", "commands/s"),
                Series(f"echo requests/s at {in_flight} in flight", "requests/s"),
                Series(f"Baton command latency p50 at {in_flight}", "ms"),
                Series(f"Baton command latency p99 at {in_flight}", "ms"),
            )
            plans = plans_for(in_flight, quick)
            for _ in range(runs):
                load: Load = await plans_through_baton(client, in_flight, plans)
                level.baton.add(load.rate)
                level.p50_ms.add(ms(percentile(load.latencies, 0.5)))
                level.p99_ms.add(ms(percentile(load.latencies, 0.99)))
                level.errors += load.errors
                if nc is not None:
                    echo = await echo_requests(nc, in_flight, plans * COMMANDS_PER_PLAN, body)
                    level.echo.add(echo.rate)
            levels.append(level)
        if nc is not None:
            latency = await _single_flight(client, nc, runs, quick, floor)
    finally:
        await client.close()
        if nc is not None:
            await nc.drain()
    return levels, latency


def measure(
    *,
    quick: bool,
    postgres_url: str | None = None,
    in_flights: tuple[int, ...] = IN_FLIGHT,
    runs: int = 3,
    with_echo: bool = True,
) -> tuple[list[Level], Latency | None]:
    """Starts a nats-server, the echo and a Baton on a fresh store, and measures each level."""
    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        server = nats_server(Path(tmp))
        try:
            settings = settings_for(Path(tmp) / "data", postgres_url)
            echo = Child("echo", echo_env(server.url)) if with_echo else None
            if echo is not None:
                echo.start()
            try:
                with Child("baton", baton_env(settings, server.url)):
                    return run_async(
                        lambda: _measure(
                            server.url, in_flights, runs, quick, with_echo, postgres_url is None
                        )
                    )
            finally:
                if echo is not None:
                    echo.close()
        finally:
            server.close()


def report(levels: list[Level], store: str, latency: Latency | None = None) -> None:
    for level in levels:
        print(level.baton.line())
        if level.echo.values:
            print(level.echo.line())
        print(level.p50_ms.line())
        print(level.p99_ms.line())
        if level.echo.values:
            ratio(
                f"Baton/echo at {level.in_flight} in flight ({store})",
                level.baton.median,
                level.echo.median,
            )
        if level.errors:
            note(f"WARNING: {level.errors} plans did not end completed")
    if latency is not None:
        for series in (
            latency.create_p50,
            latency.create_p99,
            latency.echo_p50,
            latency.echo_p99,
            latency.save_p50,
            latency.inproc_p50,
        ):
            if series.values:  # the raw save and in-process create are SQLite's only
                print(series.line())
        ratio(f"task.create p50 / echo p50, one at a time ({store})", *_p50s(latency))
        if not latency.save_p50.values:  # the raw save is SQLite's: no floor for PostgreSQL
            return
        floor = latency.floor_ms
        ratio(
            f"task.create p50 / (echo p50 + raw save p50) ({store})",
            latency.create_p50.median,
            floor,
        )
        note(
            f"floor {floor:.2f} ms: echo {latency.echo_p50.median:.2f} + durable save "
            f"{latency.save_p50.median:.2f}; the 3x goal allows"
            f" {3 * latency.echo_p50.median:.2f} ms"
            f", Baton's own share of the create is {latency.create_p50.median - floor:.2f} ms"
        )
        inproc = latency.inproc_p50.median
        rest = latency.create_p50.median - inproc - latency.echo_p50.median
        note(
            f"of the create's {latency.create_p50.median:.2f} ms, the domain and the store take"
            f" {inproc:.2f} in process (durable save included) and the echo's round trip"
            f" {latency.echo_p50.median:.2f}; the service's loop, its hops and the publisher's"
            f" contention the other {rest:.2f}"
        )


def _p50s(latency: Latency) -> tuple[float, float]:
    return latency.create_p50.median, latency.echo_p50.median


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("1. Commands over NATS (SQLite, durable) vs a bare nats.micro echo, same server")
    note("plans of 10 sequential steps: create, start, next x 10 = 12 commands a plan")
    levels, latency = measure(quick=quick)
    report(levels, "SQLite", latency)
    top = levels[-1]
    goal(f"Baton/echo at {top.in_flight} in flight (aim 0.4)", top.ratio, 0.15)
    results: dict[str, Any] = {f"commands_per_s@{lv.in_flight}": lv.baton.median for lv in levels}
    results |= {f"echo_per_s@{lv.in_flight}": lv.echo.median for lv in levels}
    results |= {f"ratio@{lv.in_flight}": lv.ratio for lv in levels}
    if latency is not None:
        goal(
            "task.create p50 / echo p50, one at a time", latency.ratio, 3.0, higher_is_better=False
        )
        results["create_p50_ms"] = latency.create_p50.median
        results["echo_p50_ms"] = latency.echo_p50.median
        results["latency_ratio"] = latency.ratio
        results["raw_save_p50_ms"] = latency.save_p50.median
    results["levels"] = levels  # benchmark 2 reuses these runs instead of repeating them
    return results
