"""Seed 004's in-memory dependency queue (``elemental_agents.core.taskqueue.queue.TaskQueue``).

The PyPI package ``elemental-agents==0.1.7`` declares Python >= 3.12 and pulls in dozens of
heavy dependencies (LLM clients, chromadb, ...), none of which the queue module uses: it needs
pydantic, ``loguru`` and ``rich``. So the bench fetches the wheel alone
(``pip download --no-deps --only-binary=:all: --python-version 3.12``), unzips it into the
virtualenv (``<venv>/bench-peers/elemental-agents-0.1.7``, bench environment only; ``make
distclean`` removes it) and puts that folder on ``sys.path``; ``loguru`` and ``rich`` come from
``bench/requirements-peers.txt``.

How the queue is driven, read from its source: ``create_task_queue(tasks, instruction,
keep_ids=True)`` builds it (outside the clock); then one worker repeats
``get_next_ready_tasks()`` (it marks the first READY task IN_PROGRESS and returns it) and
``update_task(id, Status.DONE, result)`` (it records the result in the context of each task
that depends on it and re-derives every BLOCKED task's readiness) until the queue says DONE.
That is a claim and a complete per step, as a Baton worker does with ``step.claim`` and
``step.complete``. Its logging (loguru) is disabled, so no output is timed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

PACKAGE = "elemental-agents"
VERSION = "0.1.7"
MODULE = "elemental_agents.core.taskqueue.queue"
#: Where the unzipped wheel lives: inside the virtualenv, so only the bench sees it.
TARGET = Path(sys.prefix) / "bench-peers" / f"{PACKAGE}-{VERSION}"


def installed() -> bool:
    return (TARGET / "elemental_agents" / "core" / "taskqueue" / "queue.py").exists()


def ensure() -> str | None:
    """Fetches and unzips the wheel when it is not there yet; the failure's reason, or None."""
    if installed():
        return None
    with tempfile.TemporaryDirectory(prefix="bench-wheel-") as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "-d",
                tmp,
                f"{PACKAGE}=={VERSION}",
            ],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            tail = " ".join(done.stderr.strip().splitlines()[-3:])
            return f"pip download {PACKAGE}=={VERSION} failed (exit {done.returncode}): {tail}"
        TARGET.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(TARGET)
    return None


def load() -> Any:
    """The ``queue`` module (fetching the wheel first if needed), its logging disabled."""
    reason = ensure()
    if reason is not None:
        raise RuntimeError(reason)
    if str(TARGET) not in sys.path:
        sys.path.insert(0, str(TARGET))
    import importlib

    from loguru import logger

    logger.disable("elemental_agents")
    return importlib.import_module(MODULE)


def available() -> str | None:
    """Why the queue cannot run here, or None when it can."""
    try:
        load()
    except Exception as error:  # noqa: BLE001 - any failure means "skip with this reason"
        return f"{type(error).__name__}: {error}"
    return None


def ladder_tasks(n: int) -> list[dict[str, Any]]:
    """The ladder plan in the queue's format: task i depends on i-1 and i-2."""
    return [
        {
            "id": str(i),
            "description": f"step-{i}",
            "result": "",
            "dependencies": [str(j) for j in (i - 1, i - 2) if j >= 0],
            "context": {},
        }
        for i in range(n)
    ]


def run_ladder(n: int, cap_s: float = float("inf")) -> tuple[float, int]:
    """Seconds for one worker to take and complete the tasks of an ``n``-step ladder, and how
    many it did: all of them, unless ``cap_s`` ran out first."""
    queue = load()
    status = queue.Status
    tq = queue.TaskQueue()
    tq.create_task_queue(ladder_tasks(n), "bench", keep_ids=True)
    done = 0
    start = time.perf_counter()
    while True:
        task, state = tq.get_next_ready_tasks()
        if task is None:
            break
        tq.update_task(task.id, status.DONE, f"result of {task.description}")
        done += 1
        if time.perf_counter() - start > cap_s:
            return time.perf_counter() - start, done
    elapsed = time.perf_counter() - start
    if done != n or state != status.DONE:
        raise RuntimeError(f"TaskQueue ran {done} of {n} steps and ended {state}")
    return elapsed, done
