"""task.start and task.next: triggers, advancing, and the end of a plan."""

from __future__ import annotations

from baton.domain import commands as c
from baton.domain.errors import InvalidTransition, NotFound
from tests.plans import graph, seq
from tests.unit.support import create, sid, statuses, step


def test_start_schedules_a_trigger_for_the_current_step(app, clock):
    view = create(app, seq("a", "b"), session_id="s1", priority=3)
    reply = app.handle(c.StartTask(task_id=view["task_id"], delay_s=30))
    assert reply["status"] == "queued"
    assert reply["step"]["step_name"] == "a"
    trigger = reply["trigger"]
    assert trigger["task_id"] == view["task_id"]
    assert trigger["step_id"] == sid(view, "a")
    assert trigger["session_id"] == "s1"
    assert trigger["fire_at"] == clock.now + 30
    assert trigger["priority"] == 3
    assert trigger["payload"]["parent_action_id"] == reply["step"]["parent_action_id"]
    assert trigger["next_action_description"] == "do a"
    assert app.task_view(view["task_id"])["trigger"] == trigger


def test_start_with_a_priority_gives_the_trigger_that_priority(app):
    view = create(app, seq("a"))
    assert app.handle(c.StartTask(task_id=view["task_id"], priority=0))["trigger"]["priority"] == 0


def test_a_newer_trigger_replaces_the_pending_one(app):
    view = create(app, seq("a"))
    first = app.handle(c.StartTask(task_id=view["task_id"]))["trigger"]
    second = app.handle(c.StartTask(task_id=view["task_id"], delay_s=5))["trigger"]
    assert first["trigger_id"] != second["trigger_id"]
    assert app.task_view(view["task_id"])["trigger"]["trigger_id"] == second["trigger_id"]
    types = [e["type"] for e in app.history(view["task_id"])]
    assert types.count("TriggerScheduled") == 2 and "TriggerWithdrawn" not in types


def test_start_makes_the_first_ready_step_current_when_none_is(app, clock):
    view = create(app, graph(a=[], b=[]))
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    reply = app.handle(c.StartTask(task_id=view["task_id"], delay_s=30))
    assert reply["step"]["step_name"] == "b"
    assert reply["step"]["status"] == "current"
    # One event starts the step and schedules its trigger; the view at that version has both.
    last = app.history(view["task_id"])[-1]
    assert last["type"] == "StepStarted" and last["data"]["trigger"] == reply["trigger"]
    assert reply["trigger"]["step_id"] == sid(view, "b")
    assert reply["trigger"]["fire_at"] == clock.now + 30
    assert reply["trigger"]["payload"]["parent_action_id"] == reply["step"]["parent_action_id"]
    then = app.task_view(view["task_id"], version=last["version"])
    assert then["trigger"] == reply["trigger"]
    assert statuses(then)["b"] == "current"


def test_next_completes_the_current_step_and_makes_the_next_one_current_with_a_trigger(app):
    view = create(app, seq("a", "b", "c"))
    reply = app.handle(c.NextStep(task_id=view["task_id"]))
    assert reply["status"] == "queued"
    assert reply["step"]["step_name"] == "b"
    assert reply["trigger"]["step_id"] == sid(view, "b")
    after = app.task_view(view["task_id"])
    assert statuses(after) == {"a": "completed", "b": "current", "c": "pending"}
    assert after["trigger"]["step_id"] == sid(view, "b")


def test_next_replaces_the_trigger_of_the_completed_step(app):
    view = create(app, seq("a", "b"))
    first = app.handle(c.StartTask(task_id=view["task_id"]))["trigger"]
    second = app.handle(c.NextStep(task_id=view["task_id"]))["trigger"]
    assert app.task_view(view["task_id"])["trigger"] == second != first
    # task.next appends two events, StepCompleted and StepStarted: the completed step's
    # trigger goes with it, and the next step's trigger comes in the event that starts it.
    history = app.history(view["task_id"])
    assert [e["type"] for e in history][-2:] == ["StepCompleted", "StepStarted"]
    assert history[-1]["data"]["trigger"] == second
    assert second["payload"]["parent_action_id"] == history[-1]["data"]["parent_action_id"]
    # A step started without a trigger (at create) reads as it always did: no trigger key.
    first_start = next(e for e in history if e["type"] == "StepStarted")
    assert set(first_start["data"]) == {"step_id", "parent_action_id"}


def test_a_reply_s_trigger_is_the_caller_s_to_change(app):
    view = create(app, seq("a", "b", "c"))
    for reply in (
        app.handle(c.StartTask(task_id=view["task_id"])),  # the current step's own trigger
        app.handle(c.NextStep(task_id=view["task_id"])),  # in the StepStarted of the next
    ):
        kept = app.task_view(view["task_id"])["trigger"]
        reply["trigger"]["priority"] = -1
        reply["trigger"]["payload"]["step_name"] = "changed by the caller"
        assert app.task_view(view["task_id"])["trigger"] == kept
        assert kept["payload"]["step_name"] != "changed by the caller"


def test_next_on_the_last_step_completes_the_task(app):
    view = create(app, seq("a", "b"))
    app.handle(c.NextStep(task_id=view["task_id"]))
    reply = app.handle(c.NextStep(task_id=view["task_id"]))
    assert reply["status"] == "completed"
    after = app.task_view(view["task_id"])
    assert after["status"] == "completed"
    assert statuses(after) == {"a": "completed", "b": "completed"}
    assert "trigger" not in after


def test_next_says_no_next_step_when_a_failed_step_blocks_the_rest(app):
    view = create(app, seq("a", "b"))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a"), message="boom"))
    reply = app.handle(c.NextStep(task_id=view["task_id"]))
    assert reply["status"] == "no_next_step"
    assert app.task_view(view["task_id"])["status"] == "running"


def test_next_in_a_graph_starts_the_first_ready_step_in_plan_order(app):
    view = create(app, graph(a=[], b=["a"], c=[]))
    reply = app.handle(c.NextStep(task_id=view["task_id"]))
    assert reply["step"]["step_name"] == "b"
    assert step(app.task_view(view["task_id"]), "c")["ready"] is True


def test_next_and_start_on_a_task_that_is_not_running_are_409(app, rejected):
    running = create(app, seq("a"), session_id="s")
    queued = create(app, seq("a"), session_id="s")
    ended = create(app, seq("a"))
    app.handle(c.CancelTask(task_id=ended["task_id"]))
    for task in (queued, ended):
        with rejected(InvalidTransition, 409):
            app.handle(c.NextStep(task_id=task["task_id"]))
        with rejected(InvalidTransition, 409):
            app.handle(c.StartTask(task_id=task["task_id"]))
    assert app.task_view(running["task_id"])["status"] == "running"


def test_commands_on_an_unknown_task_are_404(app, rejected):
    with rejected(NotFound, 404):
        app.handle(c.NextStep(task_id="nope-00000000"))
    with rejected(NotFound, 404):
        app.handle(c.StartTask(task_id="nope-00000000"))


def test_attempts_count_the_times_a_step_became_current(app):
    view = create(app, seq("a", "b"))
    task_id, a = view["task_id"], sid(view, "a")
    app.handle(c.FailStep(task_id=task_id, step_id=a))
    app.handle(c.RetryStep(task_id=task_id, step_id=a))
    assert step(app.task_view(task_id), "a")["attempts"] == 1
    app.handle(c.StartTask(task_id=task_id))
    assert step(app.task_view(task_id), "a")["attempts"] == 2
    assert step(app.task_view(task_id), "a")["status"] == "current"
