"""Benchmark 1 (and 6): commands over NATS at 1, 16 and 100 in flight, against a micro echo.

Baton runs as ``baton serve`` would (``bench.child baton``: ``baton.adapters.bootstrap.serve``) in
its own process on a private nats-server, with a durable store in a temporary data dir (SQLite, or
a fresh PostgreSQL database for benchmark 6). The load generator drives plans of 10 sequential
steps through ``BatonClient``: create, start, next x 10 (12 commands a plan), with N requests in
flight. The baseline is a bare ``nats.micro`` echo endpoint, also in its own process, on the same
server, answered at the same concurrency with a body as large as a create: the ceiling of a Python
NATS responder. Runs alternate between the two so noise hits both."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from bench.data import settings_for
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


def plans_for(in_flight: int, quick: bool) -> int:
    """Enough plans that each timed run lasts around a second or more on this machine."""
    per_worker = 2 if quick else 4
    return max(in_flight * per_worker, 20 if quick else 50)


async def _measure(
    baton_url: str, in_flights: tuple[int, ...], runs: int, quick: bool, with_echo: bool
) -> list[Level]:
    client = await connect_client(baton_url)
    nc = await nats.connect(baton_url) if with_echo else None
    body = typical_body()
    levels: list[Level] = []
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
    finally:
        await client.close()
        if nc is not None:
            await nc.drain()
    return levels


def measure(
    *,
    quick: bool,
    postgres_url: str | None = None,
    in_flights: tuple[int, ...] = IN_FLIGHT,
    runs: int = 3,
    with_echo: bool = True,
) -> list[Level]:
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
                        lambda: _measure(server.url, in_flights, runs, quick, with_echo)
                    )
            finally:
                if echo is not None:
                    echo.close()
        finally:
            server.close()


def report(levels: list[Level], store: str) -> None:
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


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("1. Commands over NATS (SQLite, durable) vs a bare nats.micro echo, same server")
    note("plans of 10 sequential steps: create, start, next x 10 = 12 commands a plan")
    levels = measure(quick=quick)
    report(levels, "SQLite")
    top = levels[-1]
    goal(f"Baton/echo at {top.in_flight} in flight", top.ratio, 0.4)
    return {f"commands_per_s@{lv.in_flight}": lv.baton.median for lv in levels} | {
        f"echo_per_s@{lv.in_flight}": lv.echo.median for lv in levels
    }
