"""task.complete / task.fail / task.cancel: ending a task, its steps and its session's queue."""

from __future__ import annotations

import pytest

from baton.domain import commands as c
from baton.domain.errors import InvalidTransition
from tests.plans import graph, seq
from tests.unit.support import create, sid, statuses, step

ENDINGS = [
    (c.CompleteTask, "completed", "completed"),
    (c.FailTask, "error", "failed"),
    (c.CancelTask, "cancelled", "cancelled"),
]


@pytest.mark.parametrize(("command", "task_status", "current_becomes"), ENDINGS)
def test_ending_a_task_sets_its_status_and_ends_its_current_step(
    app, command, task_status, current_becomes
):
    view = create(app, seq("a", "b"))
    reply = app.handle(command(task_id=view["task_id"]))
    assert reply["status"] == task_status
    assert step(reply, "a")["status"] == current_becomes


def test_complete_and_fail_leave_pending_steps_pending_and_never_ready(app):
    for command in (c.CompleteTask, c.FailTask):
        view = create(app, graph(a=[], b=[], c=["a"]))
        reply = app.handle(command(task_id=view["task_id"], message="enough"))
        assert statuses(reply)["b"] == "pending" and statuses(reply)["c"] == "pending"
        assert not any(s["ready"] for s in reply["steps"])
        assert reply["message"] == "enough"


def test_cancel_cancels_every_pending_step(app):
    view = create(app, graph(a=[], b=[], c=["a"]))
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    reply = app.handle(c.CancelTask(task_id=view["task_id"], reason="changed my mind"))
    assert statuses(reply) == {"a": "completed", "b": "cancelled", "c": "cancelled"}
    assert reply["message"] == "changed my mind"


def test_fail_gives_the_current_step_the_failure_message(app):
    view = create(app, seq("a"))
    reply = app.handle(c.FailTask(task_id=view["task_id"], message="disk full"))
    assert step(reply, "a")["failure_message"] == "disk full"


@pytest.mark.parametrize(("command", "_status", "_step"), ENDINGS)
def test_ending_a_task_withdraws_its_pending_trigger(app, command, _status, _step):
    view = create(app, seq("a", "b"))
    trigger = app.handle(c.StartTask(task_id=view["task_id"]))["trigger"]
    reply = app.handle(command(task_id=view["task_id"]))
    assert "trigger" not in reply
    # The end takes the trigger with it: no event of its own (the Ended event says it).
    types = [e["type"] for e in app.history(view["task_id"])]
    assert "TriggerWithdrawn" not in types and types[-1] == "Ended"
    assert trigger["trigger_id"]


@pytest.mark.parametrize(("command", "_status", "_step"), ENDINGS)
def test_ending_a_task_starts_the_sessions_next_queued_task_without_a_trigger(
    app, command, _status, _step
):
    first = create(app, seq("a"), session_id="s")
    second = create(app, graph(x=["y"], y=[]), session_id="s")
    third = create(app, seq("z"), session_id="s")
    app.handle(command(task_id=first["task_id"]))
    after = app.task_view(second["task_id"])
    assert after["status"] == "running"
    assert statuses(after) == {"x": "pending", "y": "current"}
    assert "trigger" not in after
    assert app.task_view(third["task_id"])["status"] == "queued"
    reply = app.handle(c.StartTask(task_id=second["task_id"]))
    assert reply["step"]["step_name"] == "y"


@pytest.mark.parametrize(("command", "_status", "_step"), ENDINGS)
def test_ending_an_ended_task_is_409(app, rejected, command, _status, _step):
    view = create(app, seq("a"))
    app.handle(c.CancelTask(task_id=view["task_id"]))
    with rejected(InvalidTransition, 409):
        app.handle(command(task_id=view["task_id"]))


def test_a_queued_task_can_be_cancelled_and_leaves_the_queue(app):
    first = create(app, seq("a"), session_id="s")
    second = create(app, seq("b"), session_id="s")
    third = create(app, seq("c"), session_id="s")
    reply = app.handle(c.CancelTask(task_id=second["task_id"]))
    assert reply["status"] == "cancelled" and statuses(reply) == {"b": "cancelled"}
    app.handle(c.CompleteTask(task_id=first["task_id"]))
    assert app.task_view(third["task_id"])["status"] == "running"
    assert app.session_state("s").queue == []


def test_an_ended_task_is_recorded_with_a_display_message(app):
    view = create(app, seq("a"), task_name="Report")
    app.handle(c.FailTask(task_id=view["task_id"], message="no data"))
    last = app.history(view["task_id"])[-1]
    assert last["type"] == "Ended"
    assert last["data"]["status"] == "error"
    assert "Report" in last["display_message"] and "no data" in last["display_message"]
