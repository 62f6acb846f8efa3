"""Benchmark 3: projection rebuild events/s against a raw read of the same decoded log.

The store holds tasks of 10 steps, one in ten left running (the rest completed), written in
process. The baseline reads every notification in pages and decodes each to its domain event
(``recorder.select_notifications`` + ``mapper.to_domain_event``): a projection can't be faster
than reading what it projects. ``Projections.rebuild()`` clears the views and replays them all.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data import Progress, open_app, populate, settings_for
from bench.stats import Series, goal, header, note, ratio

PAGE = 500


def raw_read(app: Any) -> int:
    """Reads and decodes the whole notification log; returns how many notifications."""
    recorder, mapper = app.recorder, app.mapper
    position, count = 0, 0
    while True:
        page = recorder.select_notifications(start=position, limit=PAGE, inclusive_of_start=False)
        if not page:
            return count
        for notification in page:
            mapper.to_domain_event(notification)
        count += len(page)
        position = page[-1].id


def run(quick: bool, **_: Any) -> dict[str, Any]:
    from baton.projections import Projections

    header("3. Projection rebuild vs a raw read of the decoded notification log (SQLite)")
    n_tasks = 2_000 if quick else 10_000
    raw = Series("raw read + decode", "events/s")
    rebuilt = Series("Projections.rebuild()", "events/s")
    with tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp:
        app = open_app(settings_for(Path(tmp)))
        events = populate(app, n_tasks, progress=Progress("stored tasks", n_tasks))
        note(f"{n_tasks:,} tasks, {events:,} events in the log")
        projections = Projections(app)
        try:
            for _ in range(3):
                start = time.perf_counter()
                count = raw_read(app)
                raw.add(count / (time.perf_counter() - start))
                start = time.perf_counter()
                applied = projections.rebuild()
                rebuilt.add(applied / (time.perf_counter() - start))
        finally:
            projections.close()
            app.close()
    print(raw.line())
    print(rebuilt.line())
    r = ratio("rebuild / raw read", rebuilt.median, raw.median)
    goal("rebuild / raw read", r, 0.5)
    return {"raw_events_per_s": raw.median, "rebuild_events_per_s": rebuilt.median}
