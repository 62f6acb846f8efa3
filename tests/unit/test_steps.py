"""step.complete / step.fail / step.skip / step.retry."""

from __future__ import annotations

from baton.domain import commands as c
from baton.domain.errors import InvalidTransition, NotFound
from tests.plans import graph, seq
from tests.unit.support import create, sid, statuses, step


def complete(app, view, name, result=None):
    return app.handle(
        c.CompleteStep(task_id=view["task_id"], step_id=sid(view, name), result=result)
    )


def test_completing_the_current_step_makes_no_other_step_current(app):
    view = create(app, seq("a", "b"))
    reply = complete(app, view, "a")
    assert reply["status"] == "completed" and reply["task_status"] == "running"
    after = app.task_view(view["task_id"])
    assert statuses(after) == {"a": "completed", "b": "pending"}
    assert step(after, "b")["ready"] is True
    assert "current_step" not in after


def test_a_pending_ready_step_can_be_completed(app):
    view = create(app, graph(a=[], b=[]))
    assert complete(app, view, "b")["status"] == "completed"


def test_a_blocked_step_cannot_be_completed(app, rejected):
    view = create(app, seq("a", "b"))
    with rejected(InvalidTransition, 409):
        complete(app, view, "b")


def test_a_result_enters_the_context_of_each_direct_dependent(app):
    view = create(app, graph(a=[], b=["a"], c=["b"], d=["a"]))
    complete(app, view, "a", result={"rows": 3})
    after = app.task_view(view["task_id"])
    assert step(after, "a")["result"] == {"rows": 3}
    assert step(after, "b")["context"] == {"a": {"rows": 3}}
    assert step(after, "d")["context"] == {"a": {"rows": 3}}
    assert step(after, "c")["context"] == {}


def test_completing_the_current_step_withdraws_its_trigger(app):
    view = create(app, seq("a", "b"))
    app.handle(c.StartTask(task_id=view["task_id"]))
    complete(app, view, "a")
    assert "trigger" not in app.task_view(view["task_id"])


def test_the_task_completes_by_itself_when_every_step_is_completed_skipped_or_cancelled(app):
    view = create(app, graph(a=[], b=[], c=[]))
    app.handle(c.ReplanTask(task_id=view["task_id"], plan=graph(a=[], b=[])))
    app.handle(c.SkipStep(task_id=view["task_id"], step_id=sid(view, "b")))
    reply = complete(app, view, "a")
    assert reply["task_status"] == "completed"
    after = app.task_view(view["task_id"])
    assert statuses(after) == {"a": "completed", "b": "skipped", "c": "cancelled"}
    assert after["status"] == "completed"


def test_a_failed_step_never_completes_its_task(app):
    view = create(app, graph(a=[], b=[]))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a"), message="boom"))
    reply = complete(app, view, "b")
    assert reply["task_status"] == "running"
    after = app.task_view(view["task_id"])
    assert step(after, "a")["failure_message"] == "boom"
    assert after["status"] == "running"


def test_a_failed_step_blocks_its_dependents_until_retried_or_skipped(app):
    view = create(app, seq("a", "b"))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a")))
    assert step(app.task_view(view["task_id"]), "b")["blocked"] is True
    app.handle(c.SkipStep(task_id=view["task_id"], step_id=sid(view, "a")))
    assert step(app.task_view(view["task_id"]), "b")["ready"] is True


def test_retry_puts_a_failed_step_back_to_pending_and_it_becomes_current_again(app):
    view = create(app, seq("a", "b"))
    first_action = step(view, "a")["parent_action_id"]
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a")))
    reply = app.handle(c.RetryStep(task_id=view["task_id"], step_id=sid(view, "a")))
    assert reply["status"] == "pending" and reply["ready"] is True
    app.handle(c.NextStep(task_id=view["task_id"]))
    after = step(app.task_view(view["task_id"]), "a")
    assert after["status"] == "current" and after["attempts"] == 2
    assert after["parent_action_id"] != first_action


def test_only_a_failed_step_can_be_retried(app, rejected):
    view = create(app, seq("a", "b"))
    with rejected(InvalidTransition, 409):
        app.handle(c.RetryStep(task_id=view["task_id"], step_id=sid(view, "a")))


def test_skipping_the_last_unfinished_step_completes_the_task(app):
    view = create(app, seq("a"))
    reply = app.handle(c.SkipStep(task_id=view["task_id"], step_id=sid(view, "a"), message="n/a"))
    assert reply["status"] == "skipped" and reply["task_status"] == "completed"


def test_a_cancelled_step_cannot_be_completed_and_the_error_says_why(app, rejected):
    view = create(app, seq("a", "b"))
    app.handle(c.ReplanTask(task_id=view["task_id"], plan=seq("a")))
    with rejected(InvalidTransition, 409):
        complete(app, view, "b")
    try:
        complete(app, view, "b")
    except InvalidTransition as error:
        body = error.to_dict()
        assert body["reason"] == "invalid_transition"
        assert body["message"] == "cannot complete step 'b': it is cancelled"


def test_step_commands_on_an_ended_task_are_409(app, rejected):
    view = create(app, seq("a", "b"))
    app.handle(c.FailTask(task_id=view["task_id"]))
    for command in (c.CompleteStep, c.FailStep, c.SkipStep, c.RetryStep):
        with rejected(InvalidTransition, 409):
            app.handle(command(task_id=view["task_id"], step_id=sid(view, "b")))


def test_step_commands_on_an_unknown_step_are_404(app, rejected):
    view = create(app, seq("a"))
    for command in (c.CompleteStep, c.FailStep, c.SkipStep, c.RetryStep):
        with rejected(NotFound, 404):
            app.handle(command(task_id=view["task_id"], step_id="nope.9"))


def test_completing_a_completed_step_is_409(app, rejected):
    view = create(app, seq("a", "b"))
    complete(app, view, "a")
    with rejected(InvalidTransition, 409):
        complete(app, view, "a")
