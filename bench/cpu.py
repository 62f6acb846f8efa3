"""Where a command's CPU goes, process by process, at 1, 16 and 100 in flight.

The workload of benchmark 1 (plans of 10 sequential steps through ``BatonClient``: create, start,
next x 10) against ``baton serve`` in its own process on a private nats-server. Around each timed
run the CPU time (user + system, from /proc) of every process on the command's way is read: the
load generator (this process, a typed client), nats-server, the service, and its publisher process
(views, progress relay, trigger scheduler). Each is reported as CPU per command and as a share of a
core.

Why: on a small machine these four share the cores, so what the publisher or nats-server spends
per command is taken from the service's replies. A figure that falls with the load (per-command
cost at 1 in flight above the one at 100) is fixed cost per wake-up, not per event.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data import settings_for
from bench.harness import (
    Child,
    baton_env,
    children_of,
    cpu_seconds,
    nats_server,
    plan_commands,
    run_async,
)
from bench.stats import Series, header, note

IN_FLIGHT = (1, 16, 100)
PROCESSES = ("load generator", "nats-server", "service", "publisher")


def _plans(in_flight: int, quick: bool) -> int:
    """About a second of load or more at each level on a two-core machine."""
    return max(in_flight * (4 if quick else 12), 40 if quick else 100)


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("CPU per command, by process, at 1 / 16 / 100 in flight (benchmark 1's workload)")
    runs = 2 if quick else 3
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        server = nats_server(Path(tmp))
        try:
            settings = settings_for(Path(tmp) / "data")
            with Child("baton", baton_env(settings, server.url)) as baton:
                time.sleep(0.5)  # the publisher process starts beside the service
                publishers = children_of(baton.pid)
                pids = {
                    "load generator": os.getpid(),
                    "nats-server": server.pid or 0,
                    "service": baton.pid,
                    "publisher": publishers[0] if publishers else 0,
                }
                for in_flight in IN_FLIGHT:
                    per_command = {name: Series(name, "ms/cmd") for name in PROCESSES}
                    total = Series("all four", "ms/cmd")
                    rate = Series("commands/s", "commands/s")
                    plans = _plans(in_flight, quick)
                    run_async(lambda n=in_flight: plan_commands(server.url, n, max(n, 10)))  # warm
                    for _ in range(runs):
                        before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
                        start = time.perf_counter()
                        done = run_async(
                            lambda n=in_flight, p=plans: plan_commands(server.url, n, p)
                        )
                        elapsed = time.perf_counter() - start
                        spent = {n: cpu_seconds(pid) - before[n] for n, pid in pids.items() if pid}
                        for name, seconds in spent.items():
                            per_command[name].add(seconds / done * 1e3)
                        total.add(sum(spent.values()) / done * 1e3)
                        rate.add(done / elapsed)
                    note(f"-- {in_flight} in flight ({plans} plans a run)")
                    print(rate.line())
                    for name in PROCESSES:
                        series = per_command[name]
                        if series.values:
                            share = series.median * rate.median / 1e3 * 100
                            print(f"{series.line()}  ~{share:.0f}% of a core")
                    print(total.line())
                    results[f"commands_per_s@{in_flight}"] = rate.median
                    results[f"cpu_ms_per_command@{in_flight}"] = total.median
                    for name in PROCESSES:
                        key = name.replace(" ", "_").replace("-", "_")
                        results[f"{key}_ms@{in_flight}"] = per_command[name].median
        finally:
            server.stop()
    return results
