"""Benchmark 7: per-step cost as the plan grows (100, 1,000 and the largest plan allowed).

One worker drives a *ladder* plan to the end (step i depends on steps i-1 and i-2, so exactly
one step is ready at a time and each completion unblocks the next), timing from its first
claim to its last completion; the per-step cost is that time over the number of steps.
Creating the plan is outside the clock. Measured in the same run, sides and sizes alternating
within each round so that noise hits every side and every size alike:

- seed 004's in-memory ``TaskQueue`` (``bench/taskqueue.py``): ``get_next_ready_tasks`` +
  ``update_task(DONE)`` per step;
- Baton in process (``BatonApp.handle`` on a durable SQLite store, no NATS, no projections):
  ``ClaimStep`` + ``CompleteStep`` per step, and ``CompleteStep(claim_next=True)`` (one
  command per step) when this build supports it;
- Baton over NATS (the service in its own process as ``baton serve`` runs it, on a private
  nats-server; ``BatonClient`` requests, one at a time): ``step.claim`` + ``step.complete``,
  and ``step.complete`` with ``claim_next: true``.

``claim_next`` is detected, not assumed: when the command is refused as malformed, or its
reply has no ``next`` key, that row reads "not supported by this build".

Ratios (each against a baseline of the same run): per-step cost at 1,000 steps over per-step
cost at 100 (goal <= 1.5, the cost of a step must not grow with the plan), and Baton's steps/s
at 1,000 steps over the TaskQueue's (goal >= 3). A size is run up to three times, fewer when
its rounds have already taken ``BUDGET_S``, and one Baton plan's run stops after ``CAP_S``
seconds, its per-step cost then taken over the steps done (said in the output), so that on a
slow build the benchmark stays bounded (a few minutes). The TaskQueue always runs its plans to
the end: its rescans get cheaper as fewer tasks are blocked, so a capped run of it would
overstate its average and flatter Baton. (A build of Baton whose claim rescans the pending
steps is flattered the other way round: a capped figure of it overstates its average.)
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from baton.domain import commands as c
from baton.domain.limits import MAX_STEPS
from bench import taskqueue
from bench.data import open_app, settings_for
from bench.harness import Child, baton_env, connect_client, nats_server
from bench.stats import Series, fmt, goal, header, note, ratio

SIZES = tuple(sorted({100, 1_000, MAX_STEPS}))
#: Seconds of rounds after which a size gets no further round (at least one always runs).
BUDGET_S = 90.0
#: Seconds after which one Baton plan's run stops and counts the steps done so far (slow builds:
#: at 400 ms a step, a 1,000-step plan would take 7 minutes a side a round).
CAP_S = 60.0
WORKER = "bench"

UNSUPPORTED = "not supported by this build"


class NotSupported(Exception):
    """This build does not answer ``step.complete`` with ``claim_next``."""


def ladder(n: int) -> dict[str, Any]:
    """A dependency plan of ``n`` steps where step i depends on steps i-1 and i-2."""
    return {
        "goal": "ladder",
        "steps": [
            {
                "step_name": f"step-{i}",
                "description": f"step {i} of the ladder",
                "depends_on": [f"step-{j}" for j in (i - 1, i - 2) if j >= 0],
            }
            for i in range(n)
        ],
    }


def _check(done: int, n: int, last: dict[str, Any]) -> None:
    if done != n or last.get("queue_status") != "done":
        raise RuntimeError(f"ran {done} of {n} steps; last claim said {last!r}")


#: (seconds, steps done): a run stopped at its time cap has done fewer than the plan's steps.
Timing = tuple[float, int]


# -- Baton in process -----------------------------------------------------------------------


def _complete_claiming_next(task_id: str, step_id: str, result: str) -> c.Command:
    try:
        return c.CompleteStep.model_validate(
            {
                "task_id": task_id,
                "step_id": step_id,
                "result": result,
                "claim_next": True,
                "worker": WORKER,
            }
        )
    except ValidationError as error:
        raise NotSupported(str(error).splitlines()[0]) from error


def in_process(app: Any, n: int, claim_next: bool, cap_s: float = float("inf")) -> Timing:
    """Seconds to claim and complete the steps of an ``n``-step ladder through ``app``, and how
    many it did: all of them, unless ``cap_s`` ran out first."""
    task_id = app.handle(c.CreateTask.model_validate({"task_name": "ladder", "plan": ladder(n)}))[
        "task_id"
    ]
    done = 0
    start = time.perf_counter()
    claim = app.handle(c.ClaimStep(task_id=task_id, worker=WORKER))
    while claim["step"] is not None:
        step_id = claim["step"]["step_id"]
        result = f"result of {claim['step']['step_name']}"
        if claim_next:
            reply = app.handle(_complete_claiming_next(task_id, step_id, result))
            if "next" not in reply:
                raise NotSupported("the reply has no 'next'")
            claim = reply["next"]
        else:
            app.handle(c.CompleteStep(task_id=task_id, step_id=step_id, result=result))
            claim = app.handle(c.ClaimStep(task_id=task_id, worker=WORKER))
        done += 1
        if time.perf_counter() - start > cap_s:
            return time.perf_counter() - start, done
    elapsed = time.perf_counter() - start
    _check(done, n, claim)
    return elapsed, done


# -- Baton over NATS ------------------------------------------------------------------------


async def over_nats(client: Any, n: int, claim_next: bool, cap_s: float = float("inf")) -> Timing:
    """Seconds to claim and complete the steps of an ``n``-step ladder through the service, and
    how many it did: all of them, unless ``cap_s`` ran out first."""
    from baton.adapters.client import BatonRequestError

    task_id = (await client.create_task(task_name="ladder", plan=ladder(n)))["task_id"]
    done = 0
    start = time.perf_counter()
    claim = await client.claim_step(task_id=task_id, worker=WORKER)
    while claim["step"] is not None:
        step = claim["step"]
        body = {
            "task_id": task_id,
            "step_id": step["step_id"],
            "result": f"result of {step['step_name']}",
        }
        if claim_next:
            try:
                reply = await client.request(
                    "step.complete", {**body, "claim_next": True, "worker": WORKER}
                )
            except BatonRequestError as error:
                if error.code == 400:
                    raise NotSupported(error.message) from error
                raise
            if "next" not in reply:
                raise NotSupported("the reply has no 'next'")
            claim = reply["next"]
        else:
            await client.request("step.complete", body)
            claim = await client.claim_step(task_id=task_id, worker=WORKER)
        done += 1
        if time.perf_counter() - start > cap_s:
            return time.perf_counter() - start, done
    elapsed = time.perf_counter() - start
    _check(done, n, claim)
    return elapsed, done


# -- the benchmark ------------------------------------------------------------------------

ROWS = (
    ("taskqueue", "TaskQueue (in memory), take + complete"),
    ("inproc", "Baton in process, claim + complete"),
    ("inproc-next", "Baton in process, complete(claim_next)"),
    ("nats", "Baton over NATS, claim + complete"),
    ("nats-next", "Baton over NATS, complete(claim_next)"),
)


async def _measure(
    url: str, app: Any, sizes: tuple[int, ...], runs: int, cap_s: float, skip: dict[str, str]
) -> dict[str, dict[int, Series]]:
    client = await connect_client(url)
    per_step: dict[str, dict[int, Series]] = {key: {} for key, _ in ROWS}
    Driver = Callable[[int, float], Awaitable[Timing]]

    def sync(fn: Callable[[int, float], Timing]) -> Driver:
        async def call(n: int, cap: float) -> Timing:
            return fn(n, cap)

        return call

    drivers: dict[str, Driver] = {
        "taskqueue": sync(lambda n, cap: taskqueue.run_ladder(n)),  # never capped: see above
        "inproc": sync(lambda n, cap: in_process(app, n, False, cap)),
        "inproc-next": sync(lambda n, cap: in_process(app, n, True, cap)),
        "nats": lambda n, cap: over_nats(client, n, False, cap),
        "nats-next": lambda n, cap: over_nats(client, n, True, cap),
    }
    try:
        # Warm-up outside the clock: imports, connections, first SQLite pages.
        for key, driver in drivers.items():
            if key not in skip:
                try:
                    await driver(10, float("inf"))
                except NotSupported as why:
                    skip[key] = f"{UNSUPPORTED} ({why})"
        for n in sizes:
            for key, label in ROWS:
                per_step[key][n] = Series(f"{label}, {n:,} steps", "ms/step")
        # Sizes alternate within a round (100, 1,000, 100, 1,000, ...) as the sides do: the
        # machine's load drifts over minutes, and all of one size's rounds before the other's
        # put that drift into the 1,000/100 ratio (1.2-1.7 after the other benchmarks, 0.8-1.1
        # alone, with the same CPU per step at both sizes; interleaved, 0.75-1.0 after them).
        spent = dict.fromkeys(sizes, 0.0)
        rounds = dict.fromkeys(sizes, 0)
        for _ in range(runs):
            for n in sizes:
                if rounds[n] and spent[n] > BUDGET_S:
                    continue
                begin = time.perf_counter()
                for key, driver in drivers.items():
                    if key in skip:
                        continue
                    elapsed, done = await driver(n, cap_s)
                    if done < n:
                        note(
                            f"{dict(ROWS)[key]}, {n:,} steps: stopped at the {cap_s:.0f} s cap "
                            f"after {done:,} steps (per-step cost over those)"
                        )
                    per_step[key][n].add(1000.0 * elapsed / done)
                spent[n] += time.perf_counter() - begin
                rounds[n] += 1
        for n in sizes:
            if rounds[n] < runs:
                note(f"{n:,} steps: {rounds[n]} round(s), stopped at the {BUDGET_S:.0f} s budget")
    finally:
        await client.close()
    return per_step


def measure(*, quick: bool, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Runs every side at every size; returns per-step series and the reasons rows were skipped."""
    skip: dict[str, str] = {}
    reason = taskqueue.available()
    if reason is not None:
        skip["taskqueue"] = f"SKIPPED: {reason}"
    runs = 1 if quick else 3
    cap_s = CAP_S / 2 if quick else CAP_S
    with tempfile.TemporaryDirectory(prefix="bench-plansize-") as tmp:
        server = nats_server(Path(tmp))
        try:
            settings = settings_for(Path(tmp) / "service")
            app = open_app(settings_for(Path(tmp) / "inproc"))
            try:
                with Child("baton", baton_env(settings, server.url)):
                    per_step = asyncio.run(_measure(server.url, app, sizes, runs, cap_s, skip))
            finally:
                app.close()
        finally:
            server.close()
    return {"per_step": per_step, "skip": skip, "sizes": sizes}


def _cell(series: Series | None, skipped: str | None) -> str:
    if skipped is not None:
        return "n/a"
    if series is None or not series.values:
        return "-"
    return fmt(series.median)


def report(found: dict[str, Any]) -> dict[str, Any]:
    per_step: dict[str, dict[int, Series]] = found["per_step"]
    skip: dict[str, str] = found["skip"]
    sizes: tuple[int, ...] = found["sizes"]
    for key, _ in ROWS:
        if key in skip:
            continue
        for n in sizes:
            print(per_step[key][n].line())
    for key, label in ROWS:
        if key in skip:
            note(f"{label}: {skip[key]}")
    note("per-step ms (median), one worker, ladder plan:")
    print("    | side | " + " | ".join(f"{n:,} steps" for n in sizes) + " |")
    print("    |---|" + "---|" * len(sizes))
    for key, label in ROWS:
        cells = [_cell(per_step[key].get(n), skip.get(key)) for n in sizes]
        print(f"    | {label} | " + " | ".join(cells) + " |")
    results: dict[str, Any] = {
        f"{key}_ms@{n}": per_step[key][n].median
        for key, _ in ROWS
        if key not in skip
        for n in sizes
    }
    small, large = min(sizes), max(sizes)
    queue = per_step["taskqueue"].get(large)
    for key, label in ROWS[1:]:
        if key in skip:
            note(f"GOAL {label}: {UNSUPPORTED}" if UNSUPPORTED in skip[key] else skip[key])
            continue
        growth = ratio(
            f"{label}: per step at {large:,} / at {small:,}",
            per_step[key][large].median,
            per_step[key][small].median,
        )
        results[f"{key}_growth"] = growth
        over_queue = float("nan")
        if "taskqueue" not in skip and queue is not None:
            # steps/s = 1000 / (ms per step): Baton's over the queue's is the queue's ms / Baton's.
            over_queue = ratio(
                f"{label}: steps/s at {large:,} / TaskQueue steps/s",
                queue.median,
                per_step[key][large].median,
            )
            results[f"{key}_vs_taskqueue"] = over_queue
        if key.startswith("nats"):
            goal(f"{label}: per step {large:,}/{small:,}", growth, 1.5, higher_is_better=False)
            if over_queue == over_queue:
                goal(f"{label}: steps/s at {large:,} / TaskQueue's", over_queue, 3.0)
    return results


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("7. Per-step cost as the plan grows: ladder plans, one worker, vs seed 004's TaskQueue")
    note(f"sizes {', '.join(f'{n:,}' for n in SIZES)} (the largest plan allowed is {MAX_STEPS:,})")
    return report(measure(quick=quick))
