"""A store written by Baton 0.1, when its packages were installed as top-level ``domain``,
``projections`` and ``adapters``, reads back under ``baton.*``: every stored class has an
explicit topic, so moving the modules changes nothing on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.config import Settings, event_store_env
from baton.domain import commands as c
from baton.domain.services import BatonApp
from baton.projections import Projections

STORE = Path(__file__).resolve().parents[1] / "data" / "store-0.1"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(STORE, data)
    return data


def expected() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((STORE / "expected.json").read_text())
    return loaded


def essentials(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_name": view["task_name"],
        "session_id": view["session_id"],
        "status": view["status"],
        "version": view["version"],
        "steps": [
            {
                k: s.get(k)
                for k in (
                    "step_name",
                    "status",
                    "result",
                    "failure_message",
                    "attempts",
                    "claimed_by",
                    "depends_on",
                )
            }
            for s in view["steps"]
        ],
    }


def test_every_task_of_a_0_1_store_reads_back_as_it_was(old_store: Path) -> None:
    app = BatonApp(event_store_env(Settings(data_dir=old_store)))
    try:
        for task_id, wanted in expected()["tasks"].items():
            history = [[e["type"], e["version"]] for e in app.history(task_id)]
            assert history == wanted["history"]
            view = essentials(app.task_view(task_id))
            assert view == {k: v for k, v in wanted.items() if k != "history"}
    finally:
        app.close()


def test_the_views_of_a_0_1_store_answer_and_rebuild_to_the_same(old_store: Path) -> None:
    app = BatonApp(event_store_env(Settings(data_dir=old_store)))
    projections = Projections(app)
    try:
        projections.catch_up()
        for task_id, wanted in expected()["tasks"].items():
            assert essentials(projections.task(task_id))["steps"] == wanted["steps"]
            events = projections.history(task_id)["events"]
            assert [[e["type"], e["version"]] for e in events] == wanted["history"]
        before = projections.dump()
        projections.rebuild()
        assert projections.dump() == before
    finally:
        projections.close()
        app.close()


def test_a_command_id_recorded_by_0_1_still_returns_its_first_reply(old_store: Path) -> None:
    app = BatonApp(event_store_env(Settings(data_dir=old_store)))
    try:
        wanted = expected()
        repeat = c.CreateTask(task_name="sequential", session_id="s1")
        reply = app.handle(repeat, command_id=wanted["command_id"])
        assert reply["task_id"] == wanted["command_reply_task_id"]
        assert set(app.history(reply["task_id"])[-1]) >= {"type", "version"}
    finally:
        app.close()
