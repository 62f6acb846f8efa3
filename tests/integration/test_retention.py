"""Bounded storage (issue 15 item 3): command records outlive the idempotency window only so long,
and published-trigger marks go once their trigger can no longer be due; on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.config import Settings, event_store_env
from baton.adapters.leases import LeaseKeeper
from baton.domain import commands as c
from baton.domain.services import BatonApp
from baton.projections import Projections

PLAN = {"steps": [{"step_name": "a"}]}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BatonApp]:
    if request.param == "postgres":
        db: dict[str, Any] = request.getfixturevalue("postgres_db")
        settings = Settings(data_dir=tmp_path, postgres_url=db["url"])
    else:
        settings = Settings(data_dir=tmp_path)
    application = BatonApp(event_store_env(settings))
    yield application
    application.close()


async def _never(*_: Any) -> Any:  # pragma: no cover - the keeper is not run here
    raise AssertionError


def test_command_records_are_pruned_after_the_window_and_a_repeat_then_runs_anew(
    app: BatonApp,
) -> None:
    views = Projections(app)
    keeper = LeaseKeeper(app, views, _never, idempotency_window_s=1.0)
    try:
        first = app.handle(c.CreateTask(task_name="t", plan=PLAN), command_id="old-id")
        assert app.handle(c.CreateTask(task_name="t", plan=PLAN), command_id="old-id") == first
        app.handle(c.CreateTask(task_name="t", plan=PLAN))  # the record is not the newest row
        keeper.prune()  # marks the log's position now
        time.sleep(1.2)
        keeper._pruned_at = 0.0
        keeper.prune()  # the first mark is past the window: records up to it go
        assert app.reply_for("old-id") is None
        again = app.handle(c.CreateTask(task_name="t", plan=PLAN), command_id="old-id")
        assert again["task_id"] != first["task_id"]  # a new command now
        recent = app.handle(c.CreateTask(task_name="t", plan=PLAN), command_id="new-id")
        keeper._pruned_at = 0.0
        keeper.prune()  # a record younger than the window stays
        assert app.reply_for("new-id") == recent
    finally:
        views.close()


def test_published_trigger_marks_go_once_their_trigger_is_gone(app: BatonApp) -> None:
    views = Projections(app)
    try:
        plan = {"steps": [{"step_name": "a"}, {"step_name": "b"}]}
        task = app.handle(c.CreateTask(task_name="t", plan=plan))
        trigger = app.handle(c.StartTask(task_id=task["task_id"]))["trigger"]
        views.catch_up()
        views.mark_trigger_published(trigger["trigger_id"])
        assert views.prune_published(time.time() + 1) == 0  # still the task's pending trigger
        app.handle(c.NextStep(task_id=task["task_id"]))  # the step moved on: the trigger is gone
        views.catch_up()
        assert views.prune_published(time.time() + 1) == 1
        assert views.dump()["baton_published_triggers"] == []
    finally:
        views.close()


def test_pruning_an_idle_log_never_gives_a_read_position_to_a_new_event(app: BatonApp) -> None:
    """The log's newest row is usually a command record. Pruned after an idle window, its
    position must not be handed to the next event: every reader has already passed it, so the
    event would never reach the views or the progress stream."""
    views = Projections(app)
    keeper = LeaseKeeper(app, views, _never, idempotency_window_s=1.0)

    def log() -> set[tuple[int, str, str]]:
        notifications = app.recorder.select_notifications(1, 1000)
        return {(n.id, n.topic, str(n.originator_id)) for n in notifications}

    try:
        app.handle(c.CreateTask(task_name="idle", plan=PLAN), command_id="first-id")
        app.handle(c.CreateTask(task_name="idle", plan=PLAN), command_id="last-id")
        views.catch_up()
        passed = views.lag()["applied"]  # where every reader now is
        assert passed == app.recorder.max_notification_id()
        keeper.prune()
        time.sleep(1.2)
        keeper._pruned_at = 0.0
        keeper.prune()
        assert app.reply_for("first-id") is None  # the idle log's records went,
        assert app.reply_for("last-id") is not None  # but its newest row stays
        before = log()
        task = app.handle(c.CreateTask(task_name="after", plan=PLAN), command_id="next-id")
        appended = log() - before
        assert len(appended) >= 3  # the task, its session's activation, its command record
        assert all(position > passed for position, _, _ in appended)
        views.catch_up()
        assert views.task(task["task_id"])["task_name"] == "after"
        active = views.active(task["task_id"])  # a task without a session is its own session
        assert active is not None and active["task_id"] == task["task_id"]
    finally:
        views.close()
