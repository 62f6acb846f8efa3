"""task.create: a new task whose first ready step is current."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from baton.domain import commands as c
from baton.domain import ids
from baton.domain.errors import InvalidRequest
from tests.plans import graph, seq
from tests.unit.support import create, statuses, step


def test_create_makes_the_first_step_of_a_sequential_plan_current(app):
    view = create(app, seq("a", "b", "c"), task_instruction="do it")
    assert view["status"] == "running"
    assert view["task_instruction"] == "do it"
    assert statuses(view) == {"a": "current", "b": "pending", "c": "pending"}
    assert view["current_step"]["step_name"] == "a"
    assert view["current_step"]["attempts"] == 1
    assert view["version"] >= 2


def test_create_makes_the_first_ready_step_of_a_graph_current(app):
    view = create(app, graph(b=["a"], a=[], c=[]))
    assert statuses(view) == {"b": "pending", "a": "current", "c": "pending"}
    assert step(view, "c")["ready"] is True
    assert step(view, "b")["blocked"] is True


def test_create_schedules_no_trigger(app):
    view = create(app, seq("a"))
    assert "trigger" not in view


def test_create_without_a_plan_and_without_a_planner_is_a_400(app, rejected):
    with rejected(InvalidRequest, 400):
        app.handle(c.CreateTask(task_name="no plan"))


def test_create_records_priority_session_and_a_step_view_per_step(app):
    view = create(app, seq("a", "b"), session_id="agent-1", priority=2)
    assert (view["session_id"], view["priority"]) == ("agent-1", 2)
    keys = {
        "task_id", "step_id", "step_index", "step_name", "description", "action_instruction",
        "validation_instruction", "depends_on", "status", "ready", "attempts", "context",
    }  # fmt: skip
    assert all(keys <= set(s) for s in view["steps"])
    assert [s["step_index"] for s in view["steps"]] == [0, 1]


@pytest.mark.parametrize(
    "fields",
    [
        {"task_name": ""},
        {"task_name": "t", "session_id": "has space"},
        {"task_name": "t", "session_id": "x" * 129},
        {"task_name": "t", "session_id": "a.b"},
        {"task_name": "t", "unknown": 1},
        {"task_name": "t", "priority": "high"},
    ],
)
def test_a_malformed_create_is_rejected_before_anything_happens(fields):
    with pytest.raises(ValidationError):
        c.CreateTask(plan=seq("a"), **fields)


def test_the_created_event_carries_a_display_message(app):
    view = create(app, seq("a", "b"), task_name="Report")
    first = app.history(view["task_id"])[0]
    assert first["type"] == "Created"
    assert first["version"] == 1
    assert "Report" in first["display_message"] and "2 steps" in first["display_message"]


def test_a_new_task_id_already_taken_is_drawn_again_and_nothing_of_the_old_task_changes(
    app, monkeypatch
):
    """A task without a session gets a new session of its own id, without looking it up;
    should the random id be taken, the create runs again with another and touches nothing of
    the task (and session) holding it."""
    first = create(app, seq("a"), task_name="same")
    drawn = iter([first["task_id"], first["task_id"], "same-fresh0001"])
    monkeypatch.setattr(ids, "new_task_id", lambda name, timed=True: next(drawn))
    second = create(app, seq("a", "b"), task_name="same")
    assert second["task_id"] == "same-fresh0001"
    assert second["status"] == "running"  # its own session: it runs at once
    again = app.task_view(first["task_id"])
    assert len(again["steps"]) == 1 and again["status"] == first["status"]
    assert app.session_state(first["task_id"]).running == first["task_id"]
