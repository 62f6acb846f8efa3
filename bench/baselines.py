"""Baselines for context: the raw eventsourcing store on the same disk, no Baton code.

- one save per transaction (a one-event aggregate each): the ceiling of a command that writes
  alone, and what group commit has to beat;
- 100 aggregates per save: what batching buys on this disk.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.stats import Series, header, note, ratio


class Dot(Aggregate):
    """The smallest aggregate: one created event with one field."""

    @event("Created")
    def __init__(self, n: int) -> None:
        self.n = n


class RawApp(Application[UUID]):
    name = "Raw"


def sqlite_app(directory: Path) -> RawApp:
    return RawApp(
        {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(directory / "raw.sqlite"),
        }
    )


def postgres_app(params: dict[str, str]) -> RawApp:
    return RawApp({"PERSISTENCE_MODULE": "eventsourcing.postgres", **params})


def single_saves_per_s(app: RawApp, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        app.save(Dot(i))
    return n / (time.perf_counter() - start)


def batched_events_per_s(app: RawApp, n: int, per_save: int = 100) -> float:
    start = time.perf_counter()
    for i in range(0, n, per_save):
        app.save(*[Dot(i + j) for j in range(per_save)])
    return n / (time.perf_counter() - start)


def measure_sqlite(runs: int, n_single: int, n_batched: int) -> dict[str, Series]:
    single = Series("one save per transaction", "saves/s")
    batched = Series("100 aggregates per save", "events/s")
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp:
            app = sqlite_app(Path(tmp))
            single.add(single_saves_per_s(app, n_single))
            batched.add(batched_events_per_s(app, n_batched))
            app.close()
    return {"single": single, "batched": batched}


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("Baseline: raw eventsourcing store writes (SQLite file, same disk)")
    runs = 3
    result = measure_sqlite(runs, 500 if quick else 2000, 5000 if quick else 20000)
    for series in result.values():
        print(series.line())
    ratio("batched events/s over single saves/s", result["batched"].median, result["single"].median)
    note("No Baton code: an aggregate with one event per save. Batching is the whole game.")
    return {k: v.median for k, v in result.items()}
