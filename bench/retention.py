"""Soak: under a steady mixed load, what retention bounds stays flat once the window has passed.

Baton runs in its own process on SQLite with a short idempotency window
(``BATON_IDEMPOTENCY_WINDOW_S``: 30 s, ``--quick`` 6 s) and is driven for twelve windows
(``--quick``: five) at a steady pace by workers of their own sessions, each cycle a mix of
commands and queries through the typed client (every command carries a message id, so every one
leaves a command record): ``task.create`` (three sequential steps), ``task.start`` (a trigger,
published by the scheduler, which marks it), ``task.context``, ``step.claim`` with a lease,
``step.complete`` with ``claim_next`` and of the step it claimed, ``task.next`` twice (the last
step becomes current, then completes and with it the task), and ``query.task`` / ``query.queue``.

Sampled every quarter window, from outside the service (its files and ``/proc``):
- the resident memory (VmRSS) and peak (VmHWM) of the service and its publisher process;
- the event store's files (``events.sqlite`` with its WAL) and the pages in use;
- command records (rows and bytes) and the tasks' own events (rows and bytes) in it;
- the views' store (``views.sqlite`` with its WAL) and its published-trigger marks.

What the window bounds must stop growing one window (plus a prune interval, a quarter window)
after the load starts: the number of command records and published-trigger marks, and with them
the store's growth per command, which falls to what the tasks' own events take (they are the
record and are kept for ever; only their growth remains). Resident memory must stay flat.
Figures compare means over the last window with means over a middle one (window 7 of 12: by
then the first window's records have been pruned, the count only oscillates by one prune
interval's worth, and the bounded caches, 5,000 task aggregates among them, have filled).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baton.domain.session import CommandRecord
from bench.data import settings_for
from bench.harness import Child, baton_env, connect_client, nats_server, run_async
from bench.stats import fmt, goal, header, note

RECORD_TOPIC = CommandRecord.Created.TOPIC
PLAN = {"steps": [{"step_name": f"s{i}", "description": "soak"} for i in range(3)]}
MIB = 1024 * 1024


@dataclass
class Sample:
    at: float  # seconds since the load started
    commands: int  # commands answered so far
    rss_kib: int
    hwm_kib: int
    store_bytes: int  # events.sqlite + its WAL, on disk
    store_used: int  # pages in use in events.sqlite (file size less its free list)
    records: int
    record_bytes: int
    task_events: int
    task_event_bytes: int
    views_bytes: int
    marks: int


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_store(data_dir: Path) -> dict[str, int]:
    """Rows and bytes of the stores, read with a connection of our own (readers never block
    SQLite's writer in WAL mode)."""
    out: dict[str, int] = {}
    events = sqlite3.connect(f"file:{data_dir / 'events.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        page_size, pages, free = (
            events.execute("PRAGMA page_size").fetchone()[0],
            events.execute("PRAGMA page_count").fetchone()[0],
            events.execute("PRAGMA freelist_count").fetchone()[0],
        )
        out["store_used"] = page_size * (pages - free)
        rows = events.execute(
            "SELECT topic = ?, COUNT(*), COALESCE(SUM(LENGTH(state)), 0) FROM stored_events"
            " GROUP BY topic = ?",
            (RECORD_TOPIC, RECORD_TOPIC),
        ).fetchall()
    finally:
        events.close()
    counted = {bool(is_record): (n, size) for is_record, n, size in rows}
    out["records"], out["record_bytes"] = counted.get(True, (0, 0))
    out["task_events"], out["task_event_bytes"] = counted.get(False, (0, 0))
    views = sqlite3.connect(f"file:{data_dir / 'views.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        out["marks"] = views.execute("SELECT COUNT(*) FROM baton_published_triggers").fetchone()[0]
    finally:
        views.close()
    return out


def _sample(child: Child, data_dir: Path, started: float, commands: int) -> Sample:
    memory = child.memory_kib()
    rows = _read_store(data_dir)
    return Sample(
        at=time.perf_counter() - started,
        commands=commands,
        rss_kib=memory.get("VmRSS", 0),
        hwm_kib=memory.get("VmHWM", 0),
        store_bytes=_size(data_dir / "events.sqlite") + _size(data_dir / "events.sqlite-wal"),
        views_bytes=_size(data_dir / "views.sqlite") + _size(data_dir / "views.sqlite-wal"),
        **rows,
    )


class Counter:
    def __init__(self) -> None:
        self.commands = 0
        self.errors = 0
        self.first_error = ""
        self.last_error = ""


async def _worker(
    client: Any, index: int, stop: asyncio.Event, pace_s: float, count: Counter
) -> None:
    """One session's steady cycle of commands and queries, one cycle per ``pace_s``."""
    session = f"soak-{index}"
    cycle = 0
    while not stop.is_set():
        began = time.perf_counter()
        cycle += 1
        try:
            task = await client.create_task(
                task_name=f"soak {index}.{cycle}", plan=PLAN, session_id=session
            )
            task_id = task["task_id"]
            await client.start_task(task_id=task_id)
            await client.add_context(task_id=task_id, key="cycle", value=cycle)
            claimed = (await client.claim_step(task_id=task_id, lease_s=60))["step"]
            reply = await client.complete_step(
                task_id=task_id,
                step_id=claimed["step_id"],
                claim_id=claimed["claim_id"],
                result={"ok": cycle},
                claim_next=True,
                worker=session,
                lease_s=60,
            )
            nxt = reply["next"]["step"]
            await client.complete_step(
                task_id=task_id, step_id=nxt["step_id"], claim_id=nxt["claim_id"], result="ok"
            )
            await client.next_step(task_id=task_id)  # the last step becomes current
            await client.next_step(task_id=task_id)  # and completes: the task is done
            count.commands += 8
            await client.task(task_id=task_id)
            await client.queue(session_id=session, limit=10)
        except Exception as error:  # counted and shown; the soak goes on
            count.errors += 1
            count.first_error = count.first_error or f"{type(error).__name__}: {error}"
            count.last_error = f"{type(error).__name__}: {error}"
        wait = pace_s - (time.perf_counter() - began)
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)


async def _soak(
    url: str,
    child: Child,
    data_dir: Path,
    window_s: float,
    windows: int,
    workers: int,
    pace_s: float,
) -> tuple[list[Sample], Counter]:
    client = await connect_client(url)
    count = Counter()
    stop = asyncio.Event()
    samples: list[Sample] = []
    started = time.perf_counter()
    tasks = [asyncio.create_task(_worker(client, i, stop, pace_s, count)) for i in range(workers)]
    try:
        every = window_s / 4
        for tick in range(1, windows * 4 + 1):
            await asyncio.sleep(max(0.0, started + tick * every - time.perf_counter()))
            s = await asyncio.to_thread(_sample, child, data_dir, started, count.commands)
            samples.append(s)
            print(
                f"  t={s.at:6.1f} s  commands {s.commands:>7,}  RSS {s.rss_kib / 1024:6.1f} MiB"
                f"  store {s.store_bytes / MIB:6.2f} MiB (in use {s.store_used / MIB:6.2f})"
                f"  records {s.records:>6,}  task events {s.task_events:>7,}"
                f"  views {s.views_bytes / MIB:5.2f} MiB  marks {s.marks:>5,}",
                flush=True,
            )
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    return samples, count


def _per_command(a: Sample, b: Sample, field: str) -> float:
    done = b.commands - a.commands
    return (getattr(b, field) - getattr(a, field)) / done if done else float("nan")


def _mean(samples: list[Sample], field: str) -> float:
    return sum(getattr(s, field) for s in samples) / len(samples) if samples else float("nan")


def report(samples: list[Sample], window_s: float, windows: int, count: Counter) -> dict[str, Any]:
    """Compares the last window with the window after the store settled (pruning prunes a
    window's records a prune interval after they leave the window, so from 2 windows on the
    count only oscillates by a prune interval's worth: means over a window smooth it)."""
    filling = [s for s in samples if s.at <= window_s + 0.5]
    mid = max(3, windows // 2 + 1)  # caches (5,000 tasks, say) have filled by then
    settled = [s for s in samples if (mid - 1) * window_s - 0.5 <= s.at < mid * window_s - 0.5]
    last = [s for s in samples if s.at >= (windows - 1) * window_s - 0.5]
    end = samples[-1]
    note(
        f"{end.commands:,} commands in {end.at:.0f} s ({end.commands / end.at:.0f}/s),"
        f" {count.errors} errors{f' (first: {count.first_error})' if count.errors else ''}"
    )
    before = _per_command(samples[0], filling[-1], "store_used")
    after = _per_command(settled[0], end, "store_used")
    events_after = _per_command(settled[0], end, "task_event_bytes")
    records_after = _per_command(settled[0], end, "record_bytes")
    note(
        f"store pages in use, growth per command: {fmt(before)} B in the first window"
        f" (records kept), {fmt(after)} B from window {mid} on (records pruned); the"
        f" tasks' own events grow by {fmt(events_after)} B of state per command, records by"
        f" {fmt(records_after)} B"
    )
    ratios: dict[str, float] = {}
    for field, label in (
        ("records", "command records"),
        ("marks", "published-trigger marks"),
        ("rss_kib", "service RSS"),
    ):
        a, b = _mean(settled, field), _mean(last, field)
        ratios[field] = b / a if a else float("nan")
        note(f"{label}: mean {fmt(a)} in window {mid}, {fmt(b)} in window {windows}")
        ratio_label = f"{label}, window {windows} / window {mid}"
        goal(ratio_label, ratios[field], 1.1, higher_is_better=False)
    goal(
        "store growth per command after / before the window",
        after / before if before else float("nan"),
        1.0,
        higher_is_better=False,
    )
    note(f"peak RSS {end.hwm_kib / 1024:.1f} MiB")
    return {
        "commands": end.commands,
        "errors": count.errors,
        "records_ratio": ratios["records"],
        "marks_ratio": ratios["marks"],
        "rss_ratio": ratios["rss_kib"],
        "growth_per_command_before": before,
        "growth_per_command_after": after,
        "task_event_bytes_per_command": events_after,
    }


def run(quick: bool = False, **_: Any) -> dict[str, Any]:
    window_s = 6.0 if quick else 30.0
    windows = 5 if quick else 12
    workers, pace_s = 8, 0.25  # ~220 commands/s in all when the service keeps up
    header(
        f"retention soak: {windows} windows of {window_s:.0f} s, {workers} sessions,"
        f" a cycle each every {pace_s} s"
    )
    with tempfile.TemporaryDirectory(prefix="baton-soak-") as tmp:
        root = Path(tmp)
        server = nats_server(root)
        try:
            settings = settings_for(root / "data")
            env = baton_env(settings, server.url)
            env["BATON_IDEMPOTENCY_WINDOW_S"] = str(window_s)
            with Child("baton", env) as child:
                samples, count = run_async(
                    lambda: _soak(
                        server.url, child, root / "data", window_s, windows, workers, pace_s
                    )
                )
        finally:
            server.stop()
    return report(samples, window_s, windows, count)
