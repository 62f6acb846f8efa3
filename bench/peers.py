"""The peers of benchmark 2, each running N plans of 10 sequential steps, durably, in-process.

- LangGraph: a 10-node linear ``StateGraph`` compiled with its ``SqliteSaver`` checkpointer, one
  ``invoke`` per plan (its own thread id), so every node transition writes a checkpoint to SQLite.
  Measured with ``durability="sync"`` (the checkpoint is written before the next node runs, as
  Baton acknowledges a command only after its transaction commits) and with the library's
  default ``"async"``; the faster of the two is the figure Baton is compared with.
- DBOS: a workflow of 10 ``@DBOS.step`` calls with a SQLite system database, one workflow per
  plan; DBOS records each step's output before the next step runs.

Each returns step transitions per second (10 per plan). The peers are imported lazily, so the
rest of the bench runs when they are not installed.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

STEPS = 10


class _State(TypedDict):
    n: int


def _node(state: _State) -> dict[str, int]:
    return {"n": state["n"] + 1}


def langgraph_transitions_per_s(plans: int, durability: str = "sync") -> float:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(_State)
    for i in range(STEPS):
        graph.add_node(f"step{i}", _node)
    graph.add_edge(START, "step0")
    for i in range(STEPS - 1):
        graph.add_edge(f"step{i}", f"step{i + 1}")
    graph.add_edge(f"step{STEPS - 1}", END)
    with tempfile.TemporaryDirectory(prefix="bench-langgraph-") as tmp:
        conn = sqlite3.connect(str(Path(tmp) / "checkpoints.sqlite"), check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()
            app = graph.compile(checkpointer=saver)
            # One warm-up plan outside the clock.
            app.invoke({"n": 0}, {"configurable": {"thread_id": "warmup"}}, durability=durability)
            start = time.perf_counter()
            for i in range(plans):
                out = app.invoke(
                    {"n": 0}, {"configurable": {"thread_id": f"plan-{i}"}}, durability=durability
                )
                assert out["n"] == STEPS, out
            elapsed = time.perf_counter() - start
        finally:
            conn.close()
    return plans * STEPS / elapsed


_DBOS_SCRIPT = r"""
import json, logging, sys, time
from dbos import DBOS

plans, path = int(sys.argv[1]), sys.argv[2]
DBOS(config={"name": "bench", "system_database_url": f"sqlite:///{path}",
              "log_level": "WARNING", "run_migrations": True})

@DBOS.step()
def step(n: int) -> int:
    return n + 1

@DBOS.workflow()
def plan(n: int) -> int:
    for _ in range(10):
        n = step(n)
    return n

DBOS.launch()
assert plan(0) == 10  # warm-up outside the clock
start = time.perf_counter()
for _ in range(plans):
    assert plan(0) == 10
elapsed = time.perf_counter() - start
DBOS.destroy()
print(json.dumps({"transitions_per_s": plans * 10 / elapsed}))
"""


def dbos_transitions_per_s(plans: int) -> float:
    """Runs in a fresh interpreter: DBOS is a process-wide singleton with its own threads."""
    import json
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="bench-dbos-") as tmp:
        db = str(Path(tmp) / "dbos.sqlite")
        done = subprocess.run(
            [sys.executable, "-c", _DBOS_SCRIPT, str(plans), db],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
        )
    if done.returncode != 0:
        raise RuntimeError(f"DBOS run failed:\n{done.stderr[-2000:]}")
    last = done.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(last)
    return float(result["transitions_per_s"])


def available() -> dict[str, str | None]:
    """Each peer's import error, or None when it imports."""
    reasons: dict[str, str | None] = {}
    for name, module in (
        ("langgraph", "langgraph.checkpoint.sqlite"),
        ("dbos", "dbos"),
    ):
        try:
            logging.getLogger(module).setLevel(logging.WARNING)
            __import__(module)
            reasons[name] = None
        except Exception as error:  # noqa: BLE001 - any failure means "skip with this reason"
            reasons[name] = f"{type(error).__name__}: {error}"
    return reasons
