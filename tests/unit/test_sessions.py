"""Sessions: one running task each, later ones queued and started in order."""

from __future__ import annotations

import pytest

from baton.domain import commands as c
from baton.domain.errors import InvalidTransition
from tests.plans import seq
from tests.unit.support import create, statuses


def test_a_session_runs_one_task_and_queues_the_others_in_order(app):
    views = [create(app, seq("a", "b"), session_id="agent") for _ in range(3)]
    assert [v["status"] for v in views] == ["running", "queued", "queued"]
    assert statuses(views[1]) == {"a": "pending", "b": "pending"}
    assert not any(s["ready"] for s in views[1]["steps"])
    session = app.session_state("agent")
    assert session.running == views[0]["task_id"]
    assert session.queue == [views[1]["task_id"], views[2]["task_id"]]
    for i in range(3):
        assert app.task_view(views[i]["task_id"])["status"] == "running"
        app.handle(c.NextStep(task_id=views[i]["task_id"]))
        assert app.handle(c.NextStep(task_id=views[i]["task_id"]))["status"] == "completed"
    assert app.session_state("agent").running is None


def test_sessions_do_not_wait_for_each_other(app):
    first = create(app, seq("a"), session_id="one")
    second = create(app, seq("a"), session_id="two")
    assert first["status"] == second["status"] == "running"


def test_a_queued_task_accepts_no_step_commands(app, rejected):
    create(app, seq("a"), session_id="s")
    queued = create(app, seq("a"), session_id="s")
    with rejected(InvalidTransition, 409):
        app.handle(c.CompleteStep(task_id=queued["task_id"], step_id=queued["steps"][0]["step_id"]))


@pytest.mark.parametrize("session_id", ["", "a b", "x/y", "é", "a" * 129])
def test_a_session_id_that_is_not_a_subject_token_is_a_400(session_id):
    with pytest.raises(ValueError):
        c.CreateTask(task_name="t", session_id=session_id, plan=seq("a"))


def test_a_task_created_in_a_free_session_after_another_ended_runs_at_once(app):
    first = create(app, seq("a"), session_id="s")
    app.handle(c.CompleteTask(task_id=first["task_id"]))
    assert create(app, seq("a"), session_id="s")["status"] == "running"
