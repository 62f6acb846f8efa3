"""Command ids: a repeat gets the first reply and changes nothing, across restarts."""

from __future__ import annotations

import pytest

from baton.domain import commands as c
from baton.domain.errors import InvalidTransition
from baton.domain.services import BatonApp
from tests.plans import seq
from tests.unit.support import create, notification_count, sid


def test_a_repeated_create_returns_the_first_reply_and_appends_nothing(app):
    first = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="cmd-1"))
    before = notification_count(app)
    again = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="cmd-1"))
    assert again == first
    assert notification_count(app) == before


def test_the_argument_command_id_wins_over_the_field(app):
    first = app.handle(
        c.CreateTask(task_name="t", plan=seq("a"), command_id="field"), command_id="hdr"
    )
    again = app.handle(c.CreateTask(task_name="t", plan=seq("a")), command_id="hdr")
    assert again == first
    other = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="field"))
    assert other["task_id"] != first["task_id"]


def test_a_repeated_next_does_not_advance_twice(app):
    view = create(app, seq("a", "b", "c"))
    first = app.handle(c.NextStep(task_id=view["task_id"], command_id="n1"))
    second = app.handle(c.NextStep(task_id=view["task_id"], command_id="n1"))
    assert first == second
    assert app.task_view(view["task_id"])["current_step"]["step_name"] == "b"


def test_a_failed_command_is_not_remembered_and_can_be_retried(app):
    view = create(app, seq("a", "b"))
    b = sid(view, "b")
    with pytest.raises(InvalidTransition):
        app.handle(c.CompleteStep(task_id=view["task_id"], step_id=b, command_id="k"))
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    reply = app.handle(c.CompleteStep(task_id=view["task_id"], step_id=b, command_id="k"))
    assert reply["status"] == "completed"


def test_a_repeat_is_answered_after_a_restart_on_sqlite(tmp_path):
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")}
    app = BatonApp(env)
    first = app.handle(c.CreateTask(task_name="t", plan=seq("a", "b"), command_id="create-1"))
    nxt = app.handle(c.NextStep(task_id=first["task_id"], command_id="next-1"))
    app.close()
    reopened = BatonApp(env)
    before = notification_count(reopened)
    assert (
        reopened.handle(c.CreateTask(task_name="t", plan=seq("a", "b"), command_id="create-1"))
        == first
    )
    assert reopened.handle(c.NextStep(task_id=first["task_id"], command_id="next-1")) == nxt
    assert notification_count(reopened) == before
    assert reopened.task_view(first["task_id"])["current_step"]["step_name"] == "b"
    reopened.close()


def test_a_command_without_changes_but_with_an_id_is_remembered(app):
    view = create(app, seq("a"))
    claim = c.ClaimStep(task_id=view["task_id"], worker="w", command_id="c1")
    first = app.handle(claim)
    assert first["step"]["claimed_by"] == "w"
    assert app.handle(claim) == first
