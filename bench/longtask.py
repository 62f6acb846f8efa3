"""Benchmark 5: a task with 10,000 events against a fresh one, in process (SQLite).

The long task gets 10,000 ``task.context`` commands, written a batch at a time; their keys
cycle over ten names, so the task's *state* stays the size of a fresh task's and only its
*history* grows: what is measured is the cost of the event count (which snapshots and the
aggregate cache should hide), not of a bigger state.

Measured for both tasks, several times each:
- ``app.repository.get(id)`` cold (evicted from the aggregate cache first);
- a full command (get + command + save through ``app.handle``), cold and warm.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

from baton.domain import commands as c
from baton.domain import ids
from bench.data import open_app, plan, run_commands, settings_for
from bench.stats import Series, goal, header, ms, note, ratio

EVENTS = 10_000
KEYS = 10


def _evict(app: Any, aggregate_id: Any) -> None:
    cache = app.repository.cache
    if cache is None:
        return
    with contextlib.suppress(KeyError):
        cache.get(aggregate_id, evict=True)


def _create(app: Any, name: str) -> str:
    view = app.handle(c.CreateTask.model_validate({"task_name": name, "plan": plan()}))
    return str(view["task_id"])


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("5. Loading a task with 10,000 events vs a fresh task (SQLite, in process)")
    events = EVENTS  # cheap enough (~20 s) to keep the full figure in --quick
    runs = 15
    with tempfile.TemporaryDirectory(prefix="bench-longtask-") as tmp:
        app = open_app(settings_for(Path(tmp)))
        try:
            fresh = _create(app, "fresh")
            long = _create(app, "long")
            start = time.perf_counter()
            commands = [
                c.AddContext(task_id=long, key=f"key-{i % KEYS}", value=i) for i in range(events)
            ]
            run_commands(app, commands, batch=100)
            note(f"{events:,} context events written in {time.perf_counter() - start:.1f} s")
            version = app.repository.get(ids.task_uuid(long)).version
            snapshots = list(app.snapshots.get(ids.task_uuid(long))) if app.snapshots else []
            note(f"long task at version {version:,}; {len(snapshots)} snapshots stored")
            figures = {
                label: {
                    "get": Series(f"{label}: repository.get, cold", "ms"),
                    "cold": Series(f"{label}: full command (get+command+save), cold", "ms"),
                    "warm": Series(f"{label}: full command (get+command+save), warm", "ms"),
                }
                for label in ("fresh", "long")
            }
            # Alternate the two tasks run by run, so drift on a busy machine hits both.
            for i in range(runs):
                for label, task_id in (("fresh", fresh), ("long", long)):
                    uuid = ids.task_uuid(task_id)
                    _evict(app, uuid)
                    t = time.perf_counter()
                    app.repository.get(uuid)
                    figures[label]["get"].add(ms(time.perf_counter() - t))
                    _evict(app, uuid)
                    command = c.AddContext(task_id=task_id, key=f"key-{i % KEYS}", value=-i)
                    t = time.perf_counter()
                    app.handle(command)
                    figures[label]["cold"].add(ms(time.perf_counter() - t))
                    t = time.perf_counter()
                    app.handle(command)
                    figures[label]["warm"].add(ms(time.perf_counter() - t))
        finally:
            app.close()
    for label in ("fresh", "long"):
        for series in figures[label].values():
            print(series.line())
    results: dict[str, Any] = {}
    for what in ("get", "cold", "warm"):
        r = ratio(f"long/fresh {what}", figures["long"][what].median, figures["fresh"][what].median)
        results[f"ratio_{what}"] = r
    goal(
        "long/fresh full command, cold",
        results["ratio_cold"],
        2.0,
        higher_is_better=False,
    )
    goal("long/fresh repository.get, cold", results["ratio_get"], 2.0, higher_is_better=False)
    return results
