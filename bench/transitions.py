"""Benchmark 2: durable step transitions on plans of 10 sequential steps, Baton vs peers.

Baton: plans driven through NATS against the service in its own process (durable SQLite), as
in benchmark 1; a step transition is one ``task.next`` (10 a plan), and the rate counts the
whole plan (create and start included) so it is the plan's throughput times 10. Measured one
plan at a time, 16 plans in flight (the goal: >= 5x LangGraph's SQLite checkpointer, aim 10x) and
100. When benchmark 1 ran in the same ``python -m bench``, its runs at those levels are reused
(they are the same workload) instead of being repeated.

Peers, in process, one plan at a time (how their own docs run them), each on its own SQLite
file: LangGraph's ``SqliteSaver`` (``durability="sync"`` and its default ``"async"``; the
faster counts) and DBOS with a SQLite system database. A peer that does not import is skipped
with the reason.
"""

from __future__ import annotations

from typing import Any

from bench import commands, peers
from bench.data import STEPS
from bench.harness import COMMANDS_PER_PLAN
from bench.stats import Series, goal, header, note, ratio

IN_FLIGHT = (1, 16, 100)


def run(quick: bool, sqlite: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    header("2. Durable step transitions, plans of 10 sequential steps: Baton vs LangGraph, DBOS")
    runs = 3
    plans = 20 if quick else 50
    found: dict[str, Series] = {}
    reasons = peers.available()
    if reasons["langgraph"] is None:
        for durability in ("sync", "async"):
            series = Series(f"LangGraph SqliteSaver, durability={durability}", "transitions/s")
            for _ in range(runs):
                series.add(peers.langgraph_transitions_per_s(plans, durability))
            found[f"langgraph-{durability}"] = series
    else:
        note(f"LangGraph SKIPPED: {reasons['langgraph']}")
    if reasons["dbos"] is None:
        series = Series("DBOS, SQLite system database", "transitions/s")
        try:
            for _ in range(runs):
                series.add(peers.dbos_transitions_per_s(plans))
            found["dbos"] = series
        except Exception as error:  # noqa: BLE001 - a failing peer is skipped, with the reason
            note(f"DBOS SKIPPED: {error}")
    else:
        note(f"DBOS SKIPPED: {reasons['dbos']}")

    reused: list[commands.Level] = list((sqlite or {}).get("levels", []))
    if {level.in_flight for level in reused} >= set(IN_FLIGHT):
        note("Baton's figures: benchmark 1's runs of this run (same workload)")
        levels = [level for level in reused if level.in_flight in IN_FLIGHT]
    else:
        levels, _ = commands.measure(quick=quick, in_flights=IN_FLIGHT, runs=runs, with_echo=False)
    baton: dict[int, Series] = {}
    for level in levels:
        series = Series(f"Baton over NATS, {level.in_flight} in flight", "transitions/s", values=[])
        for rate in level.baton.values:
            series.add(rate * STEPS / COMMANDS_PER_PLAN)
        baton[level.in_flight] = series

    for series in [*found.values(), *baton.values()]:
        print(series.line())
    results: dict[str, Any] = {k: v.median for k, v in found.items()}
    results |= {f"baton@{k}": v.median for k, v in baton.items()}
    if not found:
        note("no peer ran: nothing to compare with")
        return results
    best_name, best = max(found.items(), key=lambda kv: kv[1].median)
    note(f"faster peer: {best_name} ({best.median:,.0f} transitions/s, one plan at a time)")
    ratio(
        "Baton at 1 in flight / faster peer (both one plan at a time)", baton[1].median, best.median
    )
    for in_flight in IN_FLIGHT[1:]:
        results[f"ratio@{in_flight}"] = ratio(
            f"Baton at {in_flight} in flight / faster peer", baton[in_flight].median, best.median
        )
    langgraph = [series for name, series in found.items() if name.startswith("langgraph")]
    if langgraph:
        fastest = max(langgraph, key=lambda series: series.median)
        r = ratio(f"Baton at 16 in flight / {fastest.name}", baton[16].median, fastest.median)
        results["vs_langgraph@16"] = r
        goal("Baton (16 plans in flight) / LangGraph SQLite checkpointer (aim 10)", r, 5.0)
    note(
        "the peers run in process with no network hop and one plan at a time (their embedded "
        "APIs serialise on one SQLite connection); Baton pays a NATS round trip per command"
    )
    return results
