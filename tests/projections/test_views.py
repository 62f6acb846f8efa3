"""Each view, driven through real commands, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from baton.domain import commands as c
from baton.domain.errors import InvalidRequest, NotFound
from baton.domain.services import BatonApp
from baton.projections import Projections
from tests.plans import graph, seq
from tests.projections.support import create, step_id

# -- the active task -----------------------------------------------------------------------------


def test_active_task_changes_when_a_task_ends_and_the_next_queued_one_starts(
    app: BatonApp, views: Projections
) -> None:
    first = create(app, seq("a", "b"), session_id="s1")
    second = create(app, seq("x"), session_id="s1")
    views.catch_up()
    assert views.active("s1")["task_id"] == first
    assert views.task(second)["status"] == "queued"

    app.handle(c.CompleteTask(task_id=first))
    views.catch_up()
    active = views.active("s1")
    assert active["task_id"] == second
    assert active["status"] == "running"
    assert active["current_step"]["step_name"] == "x"
    assert active == app.task_view(second)

    app.handle(c.CancelTask(task_id=second))
    views.catch_up()
    assert views.active("s1") is None


def test_active_is_none_for_an_unknown_session(views: Projections) -> None:
    assert views.active("nobody") is None


def test_task_is_the_full_task_view_and_unknown_tasks_are_not_found(
    app: BatonApp, views: Projections
) -> None:
    task_id = create(app, graph(a=[], b=["a"]), priority=3)
    app.handle(c.StartTask(task_id=task_id))
    app.handle(c.AddContext(task_id=task_id, key="k", value={"deep": [1, 2]}))
    views.catch_up()
    assert views.task(task_id) == app.task_view(task_id)
    with pytest.raises(NotFound):
        views.task("no-such-task")


# -- the ready queue -----------------------------------------------------------------------------


def test_queue_orders_steps_by_priority_then_fire_at_then_age(
    app: BatonApp, views: Projections
) -> None:
    oldest = create(app, graph(a=[], b=[]), session_id="s1")  # two ready steps, same fire_at
    triggered = create(app, seq("t"), session_id="s2")
    urgent = create(app, seq("u"), session_id="s3", priority=1)
    bumped = create(app, seq("v"), session_id="s4")
    younger = create(app, seq("y"), session_id="s5")
    app.handle(c.StartTask(task_id=triggered))  # fire_at: now, later than every created_at
    app.handle(c.StartTask(task_id=bumped, priority=0))  # the trigger's priority wins
    views.catch_up()

    steps = views.queue()["steps"]
    order = [(s["task_id"], s["step_name"]) for s in steps]
    assert order == [
        (bumped, "v"),
        (urgent, "u"),
        (oldest, "a"),
        (oldest, "b"),
        (younger, "y"),
        (triggered, "t"),
    ]
    keys = [(s["priority"], s["fire_at"]) for s in steps]
    assert keys == sorted(keys)
    assert [s["session_id"] for s in steps] == ["s4", "s3", "s1", "s1", "s5", "s2"]
    assert views.queue(limit=2)["steps"] == steps[:2]
    assert [s["step_name"] for s in views.queue(session_id="s1")["steps"]] == ["a", "b"]


def test_queue_excludes_queued_and_ended_tasks_and_claimed_current_steps(
    app: BatonApp, views: Projections
) -> None:
    running = create(app, graph(a=[], b=[], c=["a"]), session_id="s1")
    queued = create(app, seq("q"), session_id="s1")
    ended = create(app, seq("e"), session_id="s2")
    app.handle(c.CompleteTask(task_id=ended))
    app.handle(c.ClaimStep(task_id=running, worker="w1"))  # claims the current step "a"
    views.catch_up()

    steps = views.queue()["steps"]
    assert [(s["task_id"], s["step_name"], s["status"]) for s in steps] == [
        (running, "b", "pending")
    ]
    assert queued not in {s["task_id"] for s in steps}

    app.handle(c.CompleteStep(task_id=running, step_id=step_id(app, running, "a")))
    views.catch_up()
    assert [s["step_name"] for s in views.queue()["steps"]] == ["b", "c"]


def test_queue_lists_pending_triggers_and_a_replaced_one_disappears(
    app: BatonApp, views: Projections
) -> None:
    task_id = create(app, seq("a", "b"), session_id="s1")
    first = app.handle(c.StartTask(task_id=task_id, delay_s=60))["trigger"]
    second = app.handle(c.StartTask(task_id=task_id, delay_s=30))["trigger"]
    views.catch_up()
    assert views.queue()["triggers"] == [second]
    assert first["trigger_id"] != second["trigger_id"]
    assert views.queue(session_id="other")["triggers"] == []

    app.handle(c.CancelTask(task_id=task_id))
    views.catch_up()
    assert views.queue() == {"steps": [], "triggers": [], "cursor": None}


# -- triggers for the scheduler ------------------------------------------------------------------


def test_due_triggers_are_the_pending_unpublished_ones_whose_time_has_come(
    app: BatonApp, views: Projections
) -> None:
    now = time.time()
    soon = create(app, seq("a"), session_id="s1")
    later = create(app, seq("b"), session_id="s2")
    due = app.handle(c.StartTask(task_id=soon))["trigger"]
    future = app.handle(c.StartTask(task_id=later, delay_s=3600))["trigger"]
    views.catch_up()

    assert views.due_triggers(now + 60, 10) == [due]
    assert views.next_fire_at() == due["fire_at"]
    views.mark_trigger_published(due["trigger_id"])
    views.mark_trigger_published(due["trigger_id"])  # idempotent
    assert views.due_triggers(now + 60, 10) == []
    assert views.next_fire_at() == future["fire_at"]
    assert views.due_triggers(now + 7200, 10) == [future]
    # A trigger that fired is no longer pending: the queue lists only the future one.
    assert views.queue()["triggers"] == [future]


def test_rebuild_keeps_the_published_marks(app: BatonApp, views: Projections) -> None:
    task_id = create(app, seq("a"))
    trigger = app.handle(c.StartTask(task_id=task_id))["trigger"]
    views.catch_up()
    views.mark_trigger_published(trigger["trigger_id"])
    views.rebuild()
    assert views.due_triggers(time.time() + 60, 10) == []
    assert views.next_fire_at() is None
    assert views.queue()["triggers"] == []  # fired before the rebuild, fired after it


def test_a_withdrawn_trigger_is_never_due(app: BatonApp, views: Projections) -> None:
    task_id = create(app, seq("a", "b"))
    app.handle(c.StartTask(task_id=task_id))
    app.handle(c.CompleteStep(task_id=task_id, step_id=step_id(app, task_id, "a")))
    views.catch_up()
    assert views.due_triggers(time.time() + 60, 10) == []
    assert views.next_fire_at() is None


# -- task lists ----------------------------------------------------------------------------------


def test_tasks_filter_by_status_and_session(app: BatonApp, views: Projections) -> None:
    a = create(app, seq("x"), session_id="s1")
    b = create(app, seq("x"), session_id="s1")
    c_ = create(app, seq("x"), session_id="s2")
    app.handle(c.FailTask(task_id=c_, message="boom"))
    views.catch_up()

    def ids(**query: object) -> list[str]:
        return [t["task_id"] for t in views.tasks(**query)["tasks"]]  # type: ignore[arg-type]

    assert ids() == [a, b, c_]
    assert ids(status="running") == [a]
    assert ids(status="queued") == [b]
    assert ids(status="error") == [c_]
    assert ids(session_id="s1") == [a, b]
    assert ids(session_id="s1", status="queued") == [b]
    assert ids(session_id="s2", status="running") == []
    summary = views.tasks(status="error")["tasks"][0]
    assert summary["steps_by_status"] == {"failed": 1}
    assert summary["status"] == "error"


def test_tasks_paging_with_the_cursor_covers_every_task_exactly_once(
    app: BatonApp, views: Projections
) -> None:
    created = [create(app, seq("x"), session_id=f"s{i % 3}") for i in range(11)]
    views.catch_up()
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = views.tasks(limit=4, after=after)
        seen += [t["task_id"] for t in page["tasks"]]
        pages += 1
        # A task created while paging lands on a later page, never twice.
        if pages == 1:
            created.append(create(app, seq("x"), session_id="s9"))
            views.catch_up()
        after = page["cursor"]
        if after is None:
            break
    assert seen == created
    assert pages == 3
    assert views.tasks(limit=12)["cursor"] is None


def test_tasks_reject_a_cursor_they_did_not_make(views: Projections) -> None:
    with pytest.raises(InvalidRequest):
        views.tasks(after="not-a-cursor")


# -- history -------------------------------------------------------------------------------------


def test_history_lists_every_event_in_order_with_display_messages(
    app: BatonApp, views: Projections
) -> None:
    task_id = create(app, seq("a", "b"), task_name="report")
    app.handle(c.NextStep(task_id=task_id))
    app.handle(c.FailStep(task_id=task_id, step_id=step_id(app, task_id, "b"), message="nope"))
    app.handle(c.RetryStep(task_id=task_id, step_id=step_id(app, task_id, "b")))
    app.handle(c.CompleteTask(task_id=task_id))
    views.catch_up()

    history = views.history(task_id)
    assert history["task_id"] == task_id
    events = history["events"]
    assert events == app.history(task_id)
    assert [e["version"] for e in events] == list(range(1, app.get_task(task_id).version + 1))
    assert all(e["display_message"] for e in events)
    assert events[0]["type"] == "Created"
    assert events[0]["display_message"] == "Task 'report' created with 2 steps"
    assert "Step 'b' failed: nope" in [e["display_message"] for e in events]
    assert events[-1]["type"] == "Ended"


def test_history_at_a_version_equals_the_task_view_at_that_version(
    app: BatonApp, views: Projections
) -> None:
    task_id = create(app, graph(a=[], b=["a"]))
    live = {}
    for command in [
        c.StartTask(task_id=task_id),
        c.AddContext(task_id=task_id, key="k", value=1),
        c.NextStep(task_id=task_id),
        c.CompleteTask(task_id=task_id),
    ]:
        views.catch_up()
        live[views.task(task_id)["version"]] = views.task(task_id)
        app.handle(command)
    views.catch_up()
    live[views.task(task_id)["version"]] = views.task(task_id)

    for version, view in live.items():
        past = views.history(task_id, version)
        assert past == {"task_id": task_id, "version": version, "task": view}
    for version in range(1, views.task(task_id)["version"] + 1):
        assert views.history(task_id, version)["task"] == app.task_view(task_id, version)


def test_history_is_not_found_for_a_version_never_had_or_an_unknown_task(
    app: BatonApp, views: Projections
) -> None:
    task_id = create(app, seq("a"))
    views.catch_up()
    version = views.task(task_id)["version"]
    with pytest.raises(NotFound):
        views.history(task_id, version + 1)
    with pytest.raises(NotFound):
        views.history(task_id, 0)
    with pytest.raises(NotFound):
        views.history("no-such-task")
    with pytest.raises(NotFound):
        views.history("no-such-task", 1)


# -- lag, restart, ready work --------------------------------------------------------------------


def test_lag_goes_to_zero_after_catch_up(app: BatonApp, views: Projections) -> None:
    assert views.lag() == {"applied": 0, "stored": 0, "behind": 0}
    task_id = create(app, seq("a", "b"))
    app.handle(c.NextStep(task_id=task_id))
    stored = app.recorder.max_notification_id()
    assert views.lag() == {"applied": 0, "stored": stored, "behind": stored}
    assert views.catch_up() == stored
    assert views.lag() == {"applied": stored, "stored": stored, "behind": 0}
    assert views.catch_up() == 0


def test_catch_up_works_through_many_batches_with_a_tiny_cache(
    app: BatonApp, open_projections
) -> None:
    views = open_projections(app, batch_size=3, cache_size=1)
    tasks = [create(app, seq("a", "b"), session_id=f"s{i}") for i in range(4)]
    for task_id in tasks:
        app.handle(c.StartTask(task_id=task_id))
        app.handle(c.NextStep(task_id=task_id))
    views.catch_up()
    assert views.lag()["behind"] == 0
    for task_id in tasks:
        assert views.task(task_id) == app.task_view(task_id)
        assert views.history(task_id)["events"] == app.history(task_id)


def test_a_restarted_projection_resumes_from_its_tracked_position(
    app: BatonApp, open_projections
) -> None:
    first = open_projections(app)
    task_id = create(app, seq("a", "b"))
    applied = first.catch_up()
    assert applied > 0
    first.close()

    second = open_projections(app)
    assert second.lag()["applied"] == applied
    assert second.catch_up() == 0  # nothing applied twice
    app.handle(c.NextStep(task_id=task_id))
    new = app.recorder.max_notification_id() - applied
    assert second.catch_up() == new
    assert second.task(task_id) == app.task_view(task_id)
    assert len(second.history(task_id)["events"]) == app.get_task(task_id).version


def test_a_global_claim_takes_the_most_urgent_step_across_sessions(
    app: BatonApp, views: Projections
) -> None:
    create(app, seq("low"), session_id="s1", priority=7)
    urgent = create(app, seq("high", "later"), session_id="s2", priority=2)
    app.ready_work = views
    views.catch_up()
    assert views.candidate_tasks(None, 10)[0] == urgent

    reply = app.handle(c.ClaimStep(worker="w"))
    assert reply["queue_status"] == "in_progress"
    assert (reply["step"]["task_id"], reply["step"]["step_name"]) == (urgent, "high")
    views.catch_up()
    assert urgent not in views.candidate_tasks(None, 10)
    assert views.candidate_tasks("s2", 10) == []


def test_idle_status_says_failed_blocked_or_done(app: BatonApp, views: Projections) -> None:
    assert views.idle_status(None) == "done"
    task_id = create(app, graph(a=[], b=["a"]), session_id="s1")
    app.handle(c.ClaimStep(task_id=task_id, worker="w"))
    views.catch_up()
    assert views.candidate_tasks(None, 10) == []
    assert views.idle_status(None) == "blocked"
    assert views.idle_status("s1") == "blocked"
    assert views.idle_status("s2") == "done"

    app.handle(c.FailStep(task_id=task_id, step_id=step_id(app, task_id, "a")))
    views.catch_up()
    assert views.idle_status(None) == "failed"
    assert views.idle_status("s1") == "failed"

    app.handle(c.CancelTask(task_id=task_id))
    views.catch_up()
    assert views.idle_status(None) == "done"


def test_a_private_session_is_seen_only_when_named(app: BatonApp, views: Projections) -> None:
    # Issue 13 item 15: the harness runs in "_..." sessions; a real worker's unscoped claim or
    # queue never gets their steps.
    private = app.handle(c.CreateTask(task_name="h", session_id="_harness-1", plan=seq("a")))
    app.ready_work = views
    views.catch_up()
    assert views.queue()["steps"] == []
    assert app.handle(c.ClaimStep(worker="real")) == {"step": None, "queue_status": "done"}
    named = views.queue(session_id="_harness-1")["steps"]
    assert [s["task_id"] for s in named] == [private["task_id"]]
    claimed = app.handle(c.ClaimStep(session_id="_harness-1", worker="harness"))
    assert claimed["step"]["task_id"] == private["task_id"]
