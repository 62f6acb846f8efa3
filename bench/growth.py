"""Benchmark 8: commands/s at 100 in flight as the store grows, with and without timed ids.

Benchmark 1 measures on a store that is nearly empty. Here two services run side by side, each on
its own nats-server and data directory, one with timed ids (``BATON_TIMED_IDS=1``: new task ids
carry their creation time, as on any store Baton starts empty) and one without (``0``: every
aggregate id is the uuid5 of its name, as in earlier releases). Both get the same load
(benchmark 1's plans through ``BatonClient``), a round of it at a time, alternating, until each
store holds about ``rounds x plans`` tasks. The first and the last rounds are measured:
commands/s, the service's CPU per command (user + system, from /proc) and its bytes written per
command (``wchar``: the event store's log and checkpoints, and the workspaces). The publisher's
CPU per command is shown too; it does not bound the replies.

What to read: with uuid5 ids every command of a big store dirties a page of the events index of
its own for its task, so bytes and CPU per command grow with the store; with timed ids, the tasks
of the last few minutes share the pages at the index's end. (Command records and sessions keep
their uuid5: clients name them.) The ratios compare each service's last round with its first,
and the two at the same size.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data import settings_for
from bench.harness import (
    COMMANDS_PER_PLAN,
    Child,
    baton_env,
    children_of,
    cpu_seconds,
    nats_server,
    plan_commands,
    run_async,
)
from bench.stats import Series, header, note, ratio

IN_FLIGHT = 100
#: The unit of each figure of a ``Round``.
UNITS = {
    "rate": "commands/s",
    "service_ms": "ms/cmd",
    "publisher_ms": "ms/cmd",
    "written_kib": "KiB/cmd",
}


def _written(pid: int) -> int:
    """Bytes the process has written (``wchar`` of /proc/<pid>/io: write calls, cached or not)."""
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


@dataclass
class Round:
    """One measured round of a service: commands/s and what each command cost it."""

    rate: float
    service_ms: float
    publisher_ms: float
    written_kib: float


@dataclass
class Service:
    name: str
    timed: bool
    child: Child
    url: str
    publisher: int
    rounds: dict[str, list[Round]] = field(default_factory=dict)

    def run(self, plans: int, label: str | None) -> None:
        pids = (self.child.pid, self.publisher)
        cpu = [cpu_seconds(pid) for pid in pids]
        written = _written(self.child.pid)
        start = time.perf_counter()
        done = run_async(lambda: plan_commands(self.url, IN_FLIGHT, plans))
        elapsed = time.perf_counter() - start
        if label is None:
            return
        spent = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True)]
        self.rounds.setdefault(label, []).append(
            Round(
                rate=done / elapsed,
                service_ms=spent[0] / done * 1e3,
                publisher_ms=spent[1] / done * 1e3,
                written_kib=(_written(self.child.pid) - written) / done / 1024,
            )
        )

    def series(self, label: str, what: str) -> Series:
        series = Series(f"{self.name}, {label}: {what}", UNITS[what])
        for measured in self.rounds.get(label, []):
            series.add(getattr(measured, what))
        return series


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("8. Commands/s at 100 in flight as the store grows: timed ids vs uuid5 ids (SQLite)")
    plans = 600
    rounds = 5 if quick else 14
    repeats = 2 if quick else 3
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        services: list[Service] = []
        for name, timed in (("timed ids", True), ("uuid5 ids", False)):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-growth-")))
            server = nats_server(tmp)
            stack.callback(server.stop)
            env = baton_env(settings_for(tmp / "data"), server.url)
            env["BATON_TIMED_IDS"] = "1" if timed else "0"
            child = stack.enter_context(Child("baton", env))
            time.sleep(0.5)  # the publisher process starts beside the service
            publishers = children_of(child.pid)
            if not publishers:
                raise RuntimeError(f"{name}: no publisher process beside the service")
            services.append(Service(name, timed, child, server.url, publishers[0]))
        for service in services:
            service.run(IN_FLIGHT, None)  # warm: connections, caches
        # Measured rounds alternate between the two services, so a slow moment of the machine
        # falls on both; the first few rounds on a nearly empty store, the last ones on a full one.
        for _ in range(repeats):
            for service in services:
                service.run(plans // repeats, "empty store")
        for _ in range(rounds):
            for service in services:
                service.run(plans, None)
        tasks = (rounds + 1) * plans + IN_FLIGHT
        for _ in range(repeats):
            for service in services:
                service.run(plans // repeats, "grown store")
        commands = tasks * COMMANDS_PER_PLAN
        note(f"each store grown to ~{tasks:,} tasks ({commands:,} commands) between the two")
        for service in services:
            for label in ("empty store", "grown store"):
                for what in ("rate", "service_ms", "written_kib", "publisher_ms"):
                    print(service.series(label, what).line())
        for service in services:
            key = "timed" if service.timed else "uuid5"
            empty = service.series("empty store", "rate")
            grown = service.series("grown store", "rate")
            results[f"{key}_rate_grown_over_empty"] = ratio(
                f"{service.name}: commands/s, grown / empty store", grown.median, empty.median
            )
            results[f"{key}_cpu_grown_over_empty"] = ratio(
                f"{service.name}: service CPU per command, grown / empty store",
                service.series("grown store", "service_ms").median,
                service.series("empty store", "service_ms").median,
            )
        timed, plain = services
        for what, label in (
            ("rate", "commands/s"),
            ("service_ms", "service CPU per command"),
            ("written_kib", "bytes written per command"),
        ):
            results[f"timed_over_uuid5_{what}"] = ratio(
                f"timed / uuid5 ids on the grown store: {label}",
                timed.series("grown store", what).median,
                plain.series("grown store", what).median,
            )
        results["tasks"] = tasks
        note(f"load average now {os.getloadavg()[0]:.2f}")
    return results
