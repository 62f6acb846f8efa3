"""step.claim: the most urgent unclaimed current-or-ready step, or why there is none."""

from __future__ import annotations

from baton.domain import commands as c
from baton.domain.errors import InvalidRequest
from tests.plans import graph, seq
from tests.unit.support import create, sid, step


def claim(app, **kw):
    return app.handle(c.ClaimStep(**kw))


def test_claim_hands_out_the_current_unclaimed_step_and_marks_it_claimed(app):
    view = create(app, seq("a", "b"))
    reply = claim(app, task_id=view["task_id"], worker="w1")
    assert reply["queue_status"] == "in_progress"
    assert reply["step"]["step_name"] == "a"
    assert reply["step"]["claimed_by"] == "w1"
    assert step(app.task_view(view["task_id"]), "a")["claimed_by"] == "w1"


def test_claim_makes_a_ready_step_current(app):
    view = create(app, graph(a=[], b=[], c=["a"]))
    claim(app, task_id=view["task_id"], worker="w1")
    reply = claim(app, task_id=view["task_id"], worker="w2")
    assert reply["step"]["step_name"] == "b"
    assert reply["step"]["status"] == "current" and reply["step"]["attempts"] == 1
    assert reply["step"]["claimed_by"] == "w2"


def test_claim_prefers_a_step_whose_trigger_fires_before_the_task_was_created(app, clock):
    view = create(app, graph(a=[], b=[]))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a")))
    clock.now = view["created_at"] - 60  # b's trigger fires a minute before the task's birth
    assert app.handle(c.StartTask(task_id=view["task_id"]))["step"]["step_name"] == "b"
    app.handle(c.RetryStep(task_id=view["task_id"], step_id=sid(view, "a")))
    assert claim(app, task_id=view["task_id"], worker="w")["step"]["step_name"] == "b"
    assert claim(app, task_id=view["task_id"], worker="w")["step"]["step_name"] == "a"


def test_claim_takes_steps_of_equal_urgency_in_plan_order(app):
    view = create(app, graph(a=[], b=[], c=[]))
    names = [claim(app, task_id=view["task_id"], worker="w")["step"]["step_name"] for _ in "abc"]
    assert names == ["a", "b", "c"]


def test_a_claimed_step_is_not_handed_out_twice(app):
    view = create(app, seq("a", "b"))
    claim(app, task_id=view["task_id"], worker="w1")
    reply = claim(app, task_id=view["task_id"], worker="w2")
    assert reply == {"step": None, "queue_status": "blocked"}


def test_claim_says_failed_when_a_failed_step_holds_the_task(app):
    view = create(app, seq("a", "b"))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a")))
    assert claim(app, task_id=view["task_id"]) == {"step": None, "queue_status": "failed"}


def test_claim_says_done_when_nothing_is_left(app):
    view = create(app, seq("a"))
    app.handle(c.NextStep(task_id=view["task_id"]))
    assert claim(app, task_id=view["task_id"]) == {"step": None, "queue_status": "done"}
    assert claim(app, session_id="nobody") == {"step": None, "queue_status": "done"}


def test_claim_by_session_looks_only_at_the_sessions_running_task(app):
    running = create(app, seq("a"), session_id="s")
    create(app, seq("q"), session_id="s")
    reply = claim(app, session_id="s", worker="w")
    assert reply["step"]["task_id"] == running["task_id"]
    assert claim(app, session_id="s", worker="w") == {"step": None, "queue_status": "blocked"}


def test_a_queued_task_has_nothing_to_claim(app):
    create(app, seq("a"), session_id="s")
    queued = create(app, seq("q"), session_id="s")
    assert claim(app, task_id=queued["task_id"]) == {"step": None, "queue_status": "blocked"}


def test_claim_without_a_scope_and_without_a_ready_work_view_is_a_400(app, rejected):
    with rejected(InvalidRequest, 400):
        claim(app, worker="w")


def test_claim_records_the_claim_in_the_history(app):
    view = create(app, seq("a"))
    claim(app, task_id=view["task_id"], worker="w9")
    last = app.history(view["task_id"])[-1]
    assert last["type"] == "StepClaimed" and last["data"]["worker"] == "w9"
    assert last["step_id"] == sid(view, "a")


def test_a_claimed_step_is_still_advanced_by_next(app):
    view = create(app, seq("a", "b"))
    claim(app, task_id=view["task_id"], worker="w")
    reply = app.handle(c.NextStep(task_id=view["task_id"]))
    assert reply["step"]["step_name"] == "b" and "claimed_by" not in reply["step"]
