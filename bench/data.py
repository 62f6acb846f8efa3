"""Workloads and stored data the benchmarks share: plans, and fast in-process population."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from baton.adapters.config import Settings, event_store_env
from baton.adapters.timedids import timed_ids
from baton.domain import commands as c
from baton.domain.services import BatonApp

STEPS = 10


def plan(steps: int = STEPS) -> dict[str, Any]:
    """A sequential plan (no ``depends_on`` key) of ``steps`` steps."""
    return {
        "goal": "benchmark",
        "steps": [
            {
                "step_name": f"step-{i}",
                "description": f"step {i} of the benchmark plan",
                "action_instruction": "do the thing",
            }
            for i in range(steps)
        ],
    }


def settings_for(data_dir: Path, postgres_url: str | None = None, **extra: Any) -> Settings:
    return Settings(data_dir=data_dir, postgres_url=postgres_url, **extra)


def env_for(settings: Settings) -> dict[str, str]:
    """The environment a Baton child process reads its settings from."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("BATON_"):
            del env[key]
    env["BATON_DATA_DIR"] = str(settings.data_dir)
    # No web dashboard: the benchmarks measure the command service, and several services (the
    # bench's, other people's) would fight over its default port.
    env["BATON_UI_ADDR"] = settings.ui_addr or ""
    if settings.postgres_url:
        env["BATON_POSTGRES_URL"] = settings.postgres_url
    return env


def open_app(settings: Settings) -> BatonApp:
    """The application service on the store ``settings`` name, in this process, making the ids
    ``baton serve`` would make there (``BATON_TIMED_IDS`` decided with the store)."""
    app = BatonApp(event_store_env(settings))
    app.timed_ids = timed_ids(app.recorder, settings.timed_ids)
    return app


def run_commands(app: BatonApp, commands: Sequence[c.Command], batch: int) -> list[Any]:
    """Runs ``commands`` through the app, ``batch`` per transaction when it can group them."""
    handle_batch: Callable[..., list[Any]] | None = getattr(app, "handle_batch", None)
    replies: list[Any] = []
    if handle_batch is None or batch <= 1:
        return [app.handle(cmd) for cmd in commands]
    for start in range(0, len(commands), batch):
        chunk = commands[start : start + batch]
        for reply in handle_batch([(cmd, None) for cmd in chunk]):
            if isinstance(reply, BaseException):
                raise reply
            replies.append(reply)
    return replies


def populate(
    app: BatonApp,
    n_tasks: int,
    *,
    running_every: int = 10,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
    running_ids: list[str] | None = None,
    ended_ids: list[str] | None = None,
) -> int:
    """Stores ``n_tasks`` tasks of 10 steps, each in its own session.

    One in ``running_every`` stays running with its first step current (ready work for the
    queue); the others are completed. Returns the number of events written; the ids of the
    tasks left running and of those completed are appended to the lists given.
    """
    the_plan = c.CreateTask.model_validate({"task_name": "x", "plan": plan()}).plan
    before = _max_notification_id(app)
    done = 0
    while done < n_tasks:
        size = min(batch, n_tasks - done)
        creates = [
            c.CreateTask(task_name=f"stored-{done + i}", task_instruction="stored", plan=the_plan)
            for i in range(size)
        ]
        views = run_commands(app, creates, batch)
        completes = [
            c.CompleteTask(task_id=view["task_id"], message="done")
            for i, view in enumerate(views)
            if (done + i) % running_every != 0
        ]
        run_commands(app, completes, batch)
        for i, view in enumerate(views):
            keep = running_ids if (done + i) % running_every == 0 else ended_ids
            if keep is not None:
                keep.append(view["task_id"])
        done += size
        if progress is not None:
            progress(done)
    return _max_notification_id(app) - before


def _max_notification_id(app: BatonApp) -> int:
    return int(app.recorder.max_notification_id() or 0)


class Progress:
    """Prints a line at most every few seconds while a long population runs."""

    def __init__(self, label: str, total: int, every_s: float = 10.0) -> None:
        self.label = label
        self.total = total
        self.every_s = every_s
        self.start = time.perf_counter()
        self.last = self.start

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every_s or done == self.total:
            self.last = now
            rate = done / (now - self.start)
            print(f"    {self.label}: {done:,}/{self.total:,} ({rate:,.0f}/s)", flush=True)
