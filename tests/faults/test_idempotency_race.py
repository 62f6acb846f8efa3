"""Issue 11 item 7: a repeat of a command sent at the same moment as the first, on three instances
sharing one PostgreSQL database, gets the first reply, never a 409.

Each round creates a task, then three instances (three applications, each with its own cache and
connection pool, as three processes have) complete its step with the same command id at once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.config import Settings, event_store_env
from baton.domain import commands as c
from baton.domain.services import BatonApp

ROUNDS = 30


def send(
    app: BatonApp,
    command: c.CompleteStep,
    command_id: str,
    start: threading.Barrier,
    replies: list[Any],
    i: int,
) -> None:
    start.wait()
    try:
        replies[i] = app.handle(command, command_id=command_id)
    except Exception as error:  # noqa: BLE001 - the assertion says which
        replies[i] = error


@pytest.mark.postgres
def test_concurrent_repeats_on_three_instances_all_get_the_first_reply(
    postgres_db: dict[str, Any],
) -> None:
    settings = Settings(data_dir=Path("."), postgres_url=postgres_db["url"])
    apps = [BatonApp(event_store_env(settings)) for _ in range(3)]
    try:
        for round_ in range(ROUNDS):
            view = apps[0].handle(
                c.CreateTask(task_name="race", plan={"steps": [{"step_name": "a"}]})
            )
            step_id = view["steps"][0]["step_id"]
            command = c.CompleteStep(task_id=view["task_id"], step_id=step_id, result=round_)
            replies: list[Any] = [None] * len(apps)
            start = threading.Barrier(len(apps))

            threads = [
                threading.Thread(target=send, args=(apps[i], command, f"repeat-{round_}", start,
                                                    replies, i))
                for i in range(len(apps))
            ]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert all(isinstance(r, dict) for r in replies), replies
            assert replies[0] == replies[1] == replies[2]
            completions = [
                e for e in apps[0].history(view["task_id"]) if e["type"] == "StepCompleted"
            ]
            assert len(completions) == 1
    finally:
        for app in apps:
            app.close()
