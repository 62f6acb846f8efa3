"""Rules settled in the second round: advancing replans, cancelled dependencies, dropped failed
steps, the sequential rule, a task's step limit, retry messages, blank names, strict types,
idempotency scope and sizes that must fit a message."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from baton.domain import commands as c
from baton.domain.codec import dumps_bytes
from baton.domain.errors import CommandIdReused, InvalidPlan, TooLarge
from baton.domain.limits import MAX_STEPS
from tests.plans import graph, seq
from tests.unit.support import create, new_app, sid, statuses, step


def names(*ns):
    return [{"step_name": n} for n in ns]


@pytest.mark.parametrize("how", ["next", "replan"])
def test_an_advancing_replan_completes_only_the_step_being_worked_on(app, how):
    # 13.1: plan x -> y -> z, x current; the planner leaves out x, which it considers done.
    view = create(app, seq("x", "y", "z"))
    if how == "next":
        reply = app.handle(c.NextStep(task_id=view["task_id"], plan=seq("y", "z")))
        assert reply["step"]["step_name"] == "y" and reply["trigger"]["step_id"] == sid(view, "y")
    else:
        reply = app.handle(
            c.ReplanTask(task_id=view["task_id"], plan=seq("y", "z"), advance_next=True)
        )
        assert reply["advance"]["trigger"]["step_id"] == sid(view, "y")
    after = app.task_view(view["task_id"])
    assert statuses(after) == {"x": "completed", "y": "current", "z": "pending"}
    assert step(after, "y")["attempts"] == 1


def test_a_replan_may_not_depend_on_a_cancelled_step(app, rejected):
    # 13.2: refused with 400 naming the dependency (it could never run).
    view = create(app, graph(a=[], b=[]))
    app.handle(c.ReplanTask(task_id=view["task_id"], plan=graph(a=[])))  # cancels b
    with rejected(InvalidPlan, 400) as _:
        app.handle(c.ReplanTask(task_id=view["task_id"], plan=graph(a=[], d=["b"])))


def test_a_failed_step_the_replan_routes_around_does_not_hold_the_task_open(app):
    # 13.3: dropped by the replan and nothing depends on it: skipped, and the task completes.
    view = create(app, graph(a=[], b=[]))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a"), message="no"))
    app.handle(c.ReplanTask(task_id=view["task_id"], plan=graph(b=[], alt=[])))
    after = app.task_view(view["task_id"])
    assert step(after, "a")["status"] == "skipped"
    for name in ("b", "alt"):
        app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(after, name)))
    assert app.task_view(view["task_id"])["status"] == "completed"


def test_a_failed_step_a_remaining_step_depends_on_stays_failed(app):
    view = create(app, graph(a=[], b=["a"]))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a")))
    app.handle(c.ReplanTask(task_id=view["task_id"], plan=graph(b=["a"])))
    assert step(app.task_view(view["task_id"]), "a")["status"] == "failed"


def test_a_sequential_step_waits_for_every_earlier_step(app):
    # 11.10: skip a pending middle step, claim twice: only one step is ever current.
    view = create(app, seq("a", "b", "c"))
    app.handle(c.SkipStep(task_id=view["task_id"], step_id=sid(view, "b")))
    first = app.handle(c.ClaimStep(task_id=view["task_id"]))
    second = app.handle(c.ClaimStep(task_id=view["task_id"]))
    assert first["step"]["step_name"] == "a"
    assert second == {"step": None, "queue_status": "blocked"}
    after = app.task_view(view["task_id"])
    assert [s["step_name"] for s in after["steps"] if s["status"] == "current"] == ["a"]
    assert step(after, "c")["blocked"]
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    assert app.handle(c.ClaimStep(task_id=view["task_id"]))["step"]["step_name"] == "c"


def test_a_task_holds_at_most_the_step_limit_history_included(app, rejected):
    # 11.4: replans that each add new steps stop at the limit.
    batch = MAX_STEPS // 2
    view = create(app, {"steps": [{"step_name": f"a{i}", "depends_on": []} for i in range(batch)]})
    plan = {"steps": [{"step_name": f"b{i}", "depends_on": []} for i in range(batch)]}
    app.handle(c.ReplanTask(task_id=view["task_id"], plan=plan))  # cancels a*, adds b*: 1,000
    more = {"steps": [{"step_name": "c0", "depends_on": []}]}
    with rejected(TooLarge, 413):
        app.handle(c.ReplanTask(task_id=view["task_id"], plan=more))


def test_retry_keeps_its_message_in_the_history(app):
    # 13.5
    view = create(app, graph(a=[]))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "a")))
    app.handle(c.RetryStep(task_id=view["task_id"], step_id=sid(view, "a"), message="flaky"))
    retried = [e for e in app.history(view["task_id"]) if e["type"] == "StepRetried"]
    assert retried[0]["data"]["message"] == "flaky"
    assert "flaky" in retried[0]["display_message"]


@pytest.mark.parametrize("name", [" ", "\t\n", "   "])
def test_a_blank_task_name_is_refused(name):
    # 13.16
    with pytest.raises(ValidationError):
        c.CreateTask(task_name=name, plan=seq("a"))


@pytest.mark.parametrize(
    "fields",
    [
        {"priority": "5"},
        {"priority": True},
        {"priority": 1.5},
    ],
)
def test_numbers_are_strict(fields):
    # 11.11: a number field refuses strings and booleans.
    with pytest.raises(ValidationError):
        c.CreateTask(task_name="t", plan=seq("a"), **fields)


def test_delays_and_versions_are_strict_and_bounded():
    with pytest.raises(ValidationError):
        c.StartTask(task_id="t", delay_s="1")
    with pytest.raises(ValidationError):
        c.HistoryQuery(task_id="t", version=2**63)
    with pytest.raises(ValidationError):
        c.HistoryQuery(task_id="t", version="3")


def test_a_command_id_reused_on_another_command_is_409_and_says_so(app):
    # 11.7: idempotency is scoped by command (by subject).
    view = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="once"))
    with pytest.raises(CommandIdReused) as refused:
        app.handle(c.ClaimStep(task_id=view["task_id"], command_id="once"))
    assert refused.value.code == 409 and "CreateTask" in refused.value.message
    again = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="once"))
    assert again == view


def test_an_error_becomes_the_first_reply_when_a_repeat_committed_meanwhile():
    # 11.7: two instances run the same command id at once; the loser answers the first reply.
    from baton.domain.session import CommandRecord

    app = new_app()
    view = create(app, graph(a=[]))
    done = app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    app.save(CommandRecord.create("shared-id", "CompleteStep", done))
    repeat = app.handle(
        c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a"), command_id="shared-id")
    )
    assert repeat == done


def test_a_command_whose_event_would_not_fit_a_message_is_refused_before_anything_is_saved():
    # 11.1: 1,000 steps of long text fit the request limit, not a message of 64 KiB.
    app = new_app(max_message_bytes=64 * 1024)
    plan = {"steps": [{"step_name": f"s{i}", "description": "d" * 100} for i in range(1000)]}
    before = app.recorder.max_notification_id()
    with pytest.raises(TooLarge) as refused:
        app.handle(c.CreateTask(task_name="big", plan=plan))
    assert refused.value.code == 413
    assert app.recorder.max_notification_id() == before


def test_a_result_that_would_outgrow_the_task_view_is_refused(app):
    # 11.2 by expansion: a result every dependent sees would make the view too big to send.
    small = new_app(max_message_bytes=64 * 1024)
    fan = {"steps": [{"step_name": "root", "depends_on": []}] + [
        {"step_name": f"leaf{i}", "depends_on": ["root"]} for i in range(20)
    ]}  # fmt: skip
    view = create(small, fan)
    with pytest.raises(TooLarge):
        small.handle(
            c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "root"), result="r" * 8000)
        )
    ok = small.handle(
        c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "root"), result="r" * 100)
    )
    assert ok["status"] == "completed"


def test_the_view_bound_starts_from_the_view_after_a_command_that_answers_with_it(app):
    """task.context answers with the whole view: the bound kept for later commands must start
    from that view's size (not from the size of the command's last event), or a later result
    makes a view too big for query.task to send."""
    small = new_app(max_message_bytes=200_000)
    view = create(small, seq("a", "b"))
    task_id = view["task_id"]
    for i in range(5):  # five 30 KB context values: a view of ~150 KB, under the limit
        small.handle(c.AddContext(task_id=task_id, key=f"k{i}", value="v" * 30_000))
    claimed = small.handle(c.ClaimStep(task_id=task_id))
    with pytest.raises(TooLarge):  # the 30 KB result, twice in the view, would pass it
        small.handle(
            c.CompleteStep(task_id=task_id, step_id=claimed["step"]["step_id"], result="r" * 30_000)
        )
    assert len(dumps_bytes(small.task_view(task_id))) < small.message_limit


def test_sequential_plans_store_no_dependency_lists(app):
    # 11.1: the Created event stays near the size of the request.
    view = create(app, seq(*[f"s{i}" for i in range(100)]))
    created = app.history(view["task_id"])[0]["data"]
    assert all("depends_on" not in record for record in created["steps"])
    assert created["sequential"] is True
    assert step(app.task_view(view["task_id"]), "s5")["depends_on"] == ["s4"]
