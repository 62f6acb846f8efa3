"""Benchmark 4: cost per command and per query as stored tasks grow 1,000 -> 100,000.

The store grows in process (tasks of 10 steps through ``BatonApp.handle_batch``, 500 commands
a transaction; one in ten left running with a ready step, the rest completed), then Baton is
started on it in its own process (its projections catch up from where they were). Growing in
process publishes nothing, so the service starts with a backlog: every event stored since the
last size is still to go out through its progress relay (about 600,000 at 100,000 tasks). The
benchmark waits until the relay's tracked position reaches the last notification id and the
projections are 0 behind, and prints how long that took (the relay's catch-up rate on a
backlog); only then is the steady state measured over NATS, one request at a time:
- commands: ``task.create`` (10-step plan) and ``task.next`` on the new task;
- queries: ``query.task`` (a random stored task), ``query.queue`` (all sessions, limit 100:
  the ready queue), ``query.queue`` of one session, ``query.active`` of a running session.
The ratio largest/smallest size shows whether the cost is flat; the service's resident memory
(VmRSS, and its peak VmHWM, catch-up included) shows whether it grows with stored tasks.
``--quick`` stops at 10,000.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from baton.adapters.config import Settings
from baton.adapters.publication import ProgressRelay
from baton.domain.services import BatonApp
from baton.projections import Projections
from bench.data import Progress, open_app, plan, populate, settings_for
from bench.harness import Child, baton_env, connect_client, nats_server, run_async
from bench.stats import Series, fmt, goal, header, ms, note, percentile, ratio

OPS = ("create", "next", "query.task", "query.queue", "query.queue(session)", "query.active")


async def _measure(
    url: str, running: list[str], ended: list[str], runs: int, per_run: int
) -> dict[str, list[list[float]]]:
    """Latencies (s) of each operation, one list per run."""
    client = await connect_client(url)
    the_plan = plan()
    rng = random.Random(7)
    every = running + ended
    out: dict[str, list[list[float]]] = {op: [] for op in OPS}

    async def timed(samples: list[float], call: Any) -> Any:
        start = time.perf_counter()
        result = await call
        samples.append(time.perf_counter() - start)
        return result

    try:
        for _ in range(10):  # warm-up outside the clock
            await client.queue(limit=100)
            await client.task(task_id=rng.choice(every))
        for _ in range(runs):
            lat: dict[str, list[float]] = {op: [] for op in OPS}
            for i in range(per_run):
                view = await timed(
                    lat["create"], client.create_task(task_name=f"scale-{i}", plan=the_plan)
                )
                await timed(lat["next"], client.next_step(task_id=view["task_id"]))
                await timed(lat["query.task"], client.task(task_id=rng.choice(every)))
                await timed(lat["query.queue"], client.queue(limit=100))
                session = rng.choice(running)
                await timed(
                    lat["query.queue(session)"], client.queue(session_id=session, limit=100)
                )
                await timed(lat["query.active"], client.active(session_id=session))
            for op in OPS:
                out[op].append(lat[op])
    finally:
        await client.close()
    return out


def _wait_until_published(
    app: BatonApp, settings: Settings, timeout: float = 1800.0
) -> dict[str, float]:
    """Waits until the running service's relay has published every stored event and its
    projections have applied them all: both positions are read from the same store (the relay's
    tracking row, the views' tracking row) against its last notification id. Returns the backlog
    found when the service became ready and how long it took to clear."""
    relay = ProgressRelay(app, js=None, prefix=settings.subject_prefix)
    projections = Projections(app)
    try:
        begin = time.perf_counter()
        stored = int(app.recorder.max_notification_id() or 0)
        first = relay.read_position()
        behind = projections.lag()["behind"]
        next_print = begin + 10.0
        while True:
            published = relay.read_position()
            lag = projections.lag()
            if published >= lag["stored"] and lag["behind"] == 0:
                break
            now = time.perf_counter()
            if now - begin > timeout:
                raise TimeoutError(f"relay at {published:,} of {lag['stored']:,} after {timeout} s")
            if now >= next_print:
                next_print = now + 10.0
                rate = (published - first) / (now - begin)
                print(
                    f"    relay at {published:,} of {lag['stored']:,} ({rate:,.0f} events/s), "
                    f"projections {lag['behind']:,} behind",
                    flush=True,
                )
            time.sleep(0.1)
        return {
            "stored": stored,
            "relay_behind": stored - first,
            "projections_behind": behind,
            "seconds": time.perf_counter() - begin,
        }
    finally:
        projections.close()


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("4. Cost per command and per query as stored tasks grow (SQLite, over NATS)")
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    runs, per_run = 3, (100 if quick else 200)
    p50: dict[str, dict[int, Series]] = {op: {} for op in OPS}
    p99: dict[str, dict[int, Series]] = {op: {} for op in OPS}
    memory: dict[int, dict[str, int]] = {}
    catch_up: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        server = nats_server(Path(tmp))
        try:
            settings = settings_for(Path(tmp) / "data")
            app = open_app(settings)
            running: list[str] = []
            ended: list[str] = []
            stored = 0
            for size in sizes:
                start = time.perf_counter()
                events = populate(
                    app,
                    size - stored,
                    progress=Progress(f"growing to {size:,} tasks", size - stored),
                    running_ids=running,
                    ended_ids=ended,
                )
                stored = size
                note(
                    f"{size:,} tasks stored ({events:,} more events in "
                    f"{time.perf_counter() - start:.0f} s)"
                )
                with Child("baton", baton_env(settings, server.url)) as baton:
                    note(
                        f"Baton started in {baton.started_in:.1f} s "
                        "(its projections caught up before it answers)"
                    )
                    backlog = _wait_until_published(app, settings)
                    wait = backlog["seconds"]
                    rate = backlog["relay_behind"] / wait if wait else 0.0
                    note(
                        f"backlog at ready: relay {backlog['relay_behind']:,.0f} of "
                        f"{backlog['stored']:,.0f} events behind, projections "
                        f"{backlog['projections_behind']:,.0f}; published in {wait:.1f} s "
                        f"({rate:,.0f} events/s); measuring the steady state now"
                    )
                    catch_up[size] = backlog
                    load_before = os.getloadavg()[0]
                    lat = run_async(lambda: _measure(server.url, running, ended, runs, per_run))
                    memory[size] = baton.memory_kib()
                note(
                    f"load average at {size:,}: {load_before:.2f} before measuring (the "
                    f"catch-up's), {os.getloadavg()[0]:.2f} after"
                )
                for op in OPS:
                    p50[op][size] = Series(f"{op} p50 at {size:,} tasks", "ms")
                    p99[op][size] = Series(f"{op} p99 at {size:,} tasks", "ms")
                    for samples in lat[op]:
                        p50[op][size].add(ms(percentile(samples, 0.5)))
                        p99[op][size].add(ms(percentile(samples, 0.99)))
            app.close()
        finally:
            server.close()
    smallest, largest = sizes[0], sizes[-1]
    results: dict[str, Any] = {}
    for op in OPS:
        for size in sizes:
            print(p50[op][size].line())
        print(p99[op][largest].line())
        r = ratio(
            f"{op} p50 {largest:,}/{smallest:,}", p50[op][largest].median, p50[op][smallest].median
        )
        results[f"{op}_ratio"] = r
    worst = max(results.values())
    goal(
        f"largest/smallest p50, worst operation ({largest:,} vs {smallest:,})",
        worst,
        1.5,
        higher_is_better=False,
    )
    queue_p99 = p99["query.queue"][largest].median
    goal(
        f"ready-queue query p99 at {largest:,} tasks (ms)", queue_p99, 10.0, higher_is_better=False
    )
    for size in sizes:
        mem = memory[size]
        note(
            f"memory at {size:,} tasks (service + publisher process): VmRSS"
            f" {fmt(mem.get('VmRSS', 0) / 1024)} MiB"
            f" ({fmt(mem.get('service_VmRSS', 0) / 1024)} + "
            f"{fmt(mem.get('publisher_VmRSS', 0) / 1024)}), peak VmHWM"
            f" {fmt(mem.get('VmHWM', 0) / 1024)} MiB"
            f" ({fmt(mem.get('service_VmHWM', 0) / 1024)} + "
            f"{fmt(mem.get('publisher_VmHWM', 0) / 1024)})"
        )
    rss = [memory[s].get("VmRSS", 0) for s in sizes]
    if rss[0]:
        goal(
            f"VmRSS (service + publisher) {largest:,}/{smallest:,} tasks",
            rss[-1] / rss[0],
            1.5,
            higher_is_better=False,
        )
    results["queue_p99_ms"] = queue_p99
    results["memory_kib"] = memory
    results["catch_up"] = catch_up
    return results
