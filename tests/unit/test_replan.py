"""task.replan (and task.next with a plan): history kept, steps matched by name, a diff."""

from __future__ import annotations

from baton.domain import commands as c
from baton.domain.errors import InvalidPlan, InvalidTransition
from tests.plans import graph, seq
from tests.unit.support import create, sid, statuses, step


def replan(app, task_id, plan, **kw):
    return app.handle(c.ReplanTask(task_id=task_id, plan=plan, **kw))


def test_replan_keeps_unchanged_steps_changes_edited_ones_and_adds_new_ones(app):
    view = create(app, seq("a", "b", "c"))
    plan = seq("a", "b", "c", "d")
    plan["steps"][2]["description"] = "do c differently"
    reply = replan(app, view["task_id"], plan)
    assert reply["diff"] == {"added": ["d"], "changed": ["c"], "removed": []}
    assert step(reply, "c")["description"] == "do c differently"
    assert step(reply, "c")["step_id"] == sid(view, "c")
    assert statuses(reply) == {"a": "current", "b": "pending", "c": "pending", "d": "pending"}
    assert step(reply, "d")["depends_on"] == ["c"]


def test_replan_cancels_removed_steps(app):
    view = create(app, seq("a", "b", "c"))
    reply = replan(app, view["task_id"], seq("a", "c"))
    assert reply["diff"] == {"added": [], "changed": ["c"], "removed": ["b"]}
    assert statuses(reply) == {"a": "current", "b": "cancelled", "c": "pending"}
    assert step(reply, "c")["depends_on"] == ["a"]


def test_replan_keeps_terminal_steps_as_history_and_ignores_new_steps_named_like_them(app):
    view = create(app, seq("a", "b", "c"))
    app.handle(c.NextStep(task_id=view["task_id"]))
    plan = {"steps": [{"step_name": "a", "description": "again?"}, {"step_name": "x"}]}
    plan["steps"][1]["depends_on"] = ["a"]
    plan["steps"][0]["depends_on"] = []
    reply = replan(app, view["task_id"], plan)
    assert step(reply, "a")["status"] == "completed"
    assert step(reply, "a")["description"] == "do a"
    assert reply["diff"] == {"added": ["x"], "changed": [], "removed": ["b", "c"]}
    assert [s["step_name"] for s in reply["steps"]] == ["a", "b", "c", "x"]
    revised = [e for e in app.history(view["task_id"]) if e["type"] == "PlanRevised"][0]
    assert "ignored" in revised["display_message"]


def test_a_new_step_may_depend_on_a_history_step(app):
    view = create(app, seq("a", "b"))
    app.handle(c.NextStep(task_id=view["task_id"]))
    reply = replan(app, view["task_id"], graph(b=["a"], z=["a"]))
    assert step(reply, "z")["ready"] is True
    assert reply["diff"]["added"] == ["z"]


def test_replan_removing_the_current_step_cancels_it_and_makes_the_next_ready_step_current(app):
    view = create(app, seq("a", "b", "c"))
    app.handle(c.StartTask(task_id=view["task_id"]))
    reply = replan(app, view["task_id"], seq("b", "c"))
    assert statuses(reply) == {"a": "cancelled", "b": "current", "c": "pending"}
    assert "trigger" not in reply
    assert reply["diff"]["removed"] == ["a"]


def test_replan_with_advance_next_advances_as_next_does(app):
    view = create(app, seq("a", "b"))
    reply = replan(app, view["task_id"], seq("a", "b", "c"), advance_next=True)
    assert statuses(reply) == {"a": "completed", "b": "current", "c": "pending"}
    assert reply["trigger"]["step_id"] == sid(view, "b")
    assert reply["diff"]["added"] == ["c"]


def test_next_with_a_plan_revises_the_plan_first(app):
    view = create(app, seq("a", "b"))
    reply = app.handle(c.NextStep(task_id=view["task_id"], plan=seq("a", "z")))
    assert reply["status"] == "queued" and reply["step"]["step_name"] == "z"
    assert statuses(app.task_view(view["task_id"])) == {
        "a": "completed",
        "b": "cancelled",
        "z": "current",
    }


def test_a_replan_that_leaves_nothing_to_do_completes_the_task(app):
    view = create(app, seq("a", "b"))
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    reply = replan(app, view["task_id"], seq("a"))
    assert reply["status"] == "completed"
    assert statuses(reply) == {"a": "completed", "b": "cancelled"}


def test_an_invalid_replan_changes_nothing(app, rejected):
    view = create(app, seq("a", "b"))
    with rejected(InvalidPlan, 400):
        replan(app, view["task_id"], graph(a=["b"], b=["a"]))
    with rejected(InvalidPlan, 400):
        replan(app, view["task_id"], graph(a=[], b=["gone"]))
    assert app.task_view(view["task_id"])["version"] == view["version"]


def test_a_replan_may_not_make_the_current_step_wait_on_an_unfinished_one(app, rejected):
    view = create(app, seq("a", "b"))
    with rejected(InvalidPlan, 400):
        replan(app, view["task_id"], seq("new", "a", "b"))


def test_replan_of_an_ended_task_is_409(app, rejected):
    view = create(app, seq("a"))
    app.handle(c.CancelTask(task_id=view["task_id"]))
    with rejected(InvalidTransition, 409):
        replan(app, view["task_id"], seq("a", "b"))


def test_the_plan_revision_is_recorded_with_its_diff(app):
    view = create(app, seq("a", "b"))
    replan(app, view["task_id"], seq("a", "c"))
    revised = [e for e in app.history(view["task_id"]) if e["type"] == "PlanRevised"]
    assert len(revised) == 1
    assert revised[0]["data"]["removed"] == ["b"]
    assert [r["step_name"] for r in revised[0]["data"]["added"]] == ["c"]


def test_a_replan_can_revise_goal_inputs_and_context(app):
    view = create(app, seq("a"))
    reply = replan(
        app, view["task_id"], seq("a", "b", goal="g2", inputs_params={"x": 1}, context={"k": 2})
    )
    assert (reply["goal"], reply["inputs_params"], reply["context"]) == ("g2", {"x": 1}, {"k": 2})
    assert all("k" not in s["context"] for s in reply["steps"])  # once, on top


def test_a_sequential_replan_that_would_make_a_finished_step_wait_on_itself_is_refused(
    app, rejected
):
    # e is cancelled while it still follows b; listing e before b in a sequential plan would
    # make b wait for e and e (a cancelled step waits for what it followed) for b: nothing on
    # that cycle could ever run, so the task would be stuck. Refused, naming the cycle.
    view = create(app, seq("a", "b", "e"))
    app.handle(c.NextStep(task_id=view["task_id"], plan=graph(a=[], b=["a"])))
    before = app.task_view(view["task_id"])
    assert statuses(before) == {"a": "completed", "b": "current", "e": "cancelled"}
    with rejected(InvalidPlan, 400) as caught:
        replan(app, view["task_id"], seq("e", "a", "b", "c"))
    assert caught.value.details == {
        "waiting": "b",
        "via": ["b"],
        "cycle": ["b", "e", "b"],
        "history": ["e"],
    }
    assert "b -> e -> b" in str(caught.value)
    assert app.task_view(view["task_id"])["version"] == before["version"]


def test_the_refusal_is_judged_after_advance_next_and_appends_nothing(app, rejected):
    # a, b, c, e; task.next with a graph a, b, c cancels e (which followed c). A sequential
    # replan e, a, b, c, z with advance_next completes b first, then finds c waiting on e and
    # e on c: refused, and the completion of b is not kept either.
    view = create(app, seq("a", "b", "c", "e"))
    task_id = view["task_id"]
    app.handle(c.NextStep(task_id=task_id, plan=graph(a=[], b=["a"], c=["b"])))
    before = app.task_view(task_id)
    assert statuses(before) == {"a": "completed", "b": "current", "c": "pending", "e": "cancelled"}
    plan = seq("e", "a", "b", "c", "z")
    for command in (
        c.ReplanTask(task_id=task_id, plan=plan, advance_next=True),
        c.NextStep(task_id=task_id, plan=plan),
    ):
        with rejected(InvalidPlan, 400) as caught:
            app.handle(command)
        assert caught.value.details["cycle"] == ["c", "e", "c"]
    assert app.task_view(task_id)["version"] == before["version"]
    # Listing e after c is accepted, and the task runs to its end.
    reply = app.handle(c.NextStep(task_id=task_id, plan=seq("a", "b", "c", "e", "z")))
    assert reply["step"]["step_name"] == "c"
    assert app.handle(c.NextStep(task_id=task_id))["step"]["step_name"] == "z"
    assert app.handle(c.NextStep(task_id=task_id))["status"] == "completed"


def test_a_sequential_replan_that_lists_finished_steps_in_their_order_still_runs_to_the_end(app):
    view = create(app, seq("a", "b", "e"))
    app.handle(c.NextStep(task_id=view["task_id"], plan=graph(a=[], b=["a"])))
    reply = replan(app, view["task_id"], seq("a", "b", "e", "c"))
    assert statuses(reply) == {"a": "completed", "b": "current", "e": "cancelled", "c": "pending"}
    assert app.handle(c.NextStep(task_id=view["task_id"]))["step"]["step_name"] == "c"
    assert app.handle(c.NextStep(task_id=view["task_id"]))["status"] == "completed"


def test_a_cycle_among_finished_steps_that_nothing_waits_on_does_not_refuse_a_replan(app):
    # In a graph, h is skipped while it waits for x, then x is made to wait for h (a skipped
    # step satisfies a graph): h and x wait on each other. A sequential plan that drops x
    # cancels it; nothing left to run waits on either, so the plan is accepted and runs.
    view = create(app, graph(a=[], x=["a"], h=["x"]))
    task_id = view["task_id"]
    app.handle(c.SkipStep(task_id=task_id, step_id=sid(view, "h")))
    replan(app, task_id, graph(a=[], x=["h"]))
    reply = replan(app, task_id, seq("a", "y"))
    assert statuses(reply) == {"a": "current", "x": "cancelled", "h": "skipped", "y": "pending"}
    assert app.handle(c.NextStep(task_id=task_id))["step"]["step_name"] == "y"
    assert app.handle(c.NextStep(task_id=task_id))["status"] == "completed"


def _failed_step_behind_a_cycle(app):
    """A running task in which h (skipped) and x wait on each other and the failed f on h."""
    view = create(app, graph(a=[], x=["a"], h=["x"], f=["h"]))
    task_id = view["task_id"]
    app.handle(c.SkipStep(task_id=task_id, step_id=sid(view, "h")))
    app.handle(c.ClaimStep(task_id=task_id, worker="w"))
    app.handle(c.ClaimStep(task_id=task_id, worker="w"))
    app.handle(c.FailStep(task_id=task_id, step_id=sid(view, "f")))
    replan(app, task_id, graph(a=[], x=["h"], f=["h"]))
    return task_id


def test_a_failed_step_the_replan_drops_does_not_count_as_waiting_on_a_cycle(app):
    # As above, plus a failed step f waiting on h: the sequential plan leaves f out and
    # nothing waits on f, so the replan drops it (skipped); nothing left waits on h and x.
    task_id = _failed_step_behind_a_cycle(app)
    reply = replan(app, task_id, seq("a", "y"))
    assert statuses(reply) == {
        "a": "current",
        "x": "cancelled",
        "h": "skipped",
        "f": "skipped",
        "y": "pending",
    }


def test_a_failed_step_that_stays_and_waits_on_a_cycle_refuses_the_replan(app, rejected):
    # The same, but y waits on the failed step: f stays failed, and a retry would make it
    # wait on the cycle of h and x (cancelled by this plan) for ever.
    task_id = _failed_step_behind_a_cycle(app)
    with rejected(InvalidPlan, 400) as caught:
        replan(app, task_id, seq("a", "f", "y"))
    assert caught.value.details["waiting"] == "y"
    assert caught.value.details["via"] == ["y", "f", "h"]
    assert caught.value.details["cycle"] == ["h", "x", "h"]
    assert caught.value.details["history"] == ["h", "x"]


def test_a_graph_replan_may_not_make_a_step_and_a_failed_one_wait_on_each_other(app, rejected):
    # f failed while still pending (waiting on p); making p wait on f would deadlock them
    # once f is retried: f waits on p, p on f, and neither is shown failed any more.
    view = create(app, graph(a=[], p=["a"], f=["p"]))
    task_id = view["task_id"]
    app.handle(c.FailStep(task_id=task_id, step_id=sid(view, "f")))
    with rejected(InvalidPlan, 400) as caught:
        replan(app, task_id, graph(a=[], p=["f"]))
    assert caught.value.details == {
        "waiting": "p",
        "via": ["p"],
        "cycle": ["p", "f", "p"],
        "history": ["f"],
    }
    # Skipping f first makes the same plan fine: a skipped step satisfies a graph.
    app.handle(c.SkipStep(task_id=task_id, step_id=sid(view, "f")))
    reply = replan(app, task_id, graph(a=[], p=["f"]))
    assert statuses(reply) == {"a": "current", "p": "pending", "f": "skipped"}


def test_a_graph_replan_may_not_cancel_a_step_a_failed_step_still_to_run_waits_on(app, rejected):
    # g waits on the failed f, and f (a history step, with its dependencies) on x: a plan
    # that leaves x out cancels it, and f, once retried, would wait on it for ever.
    view = create(app, graph(a=[], x=["a"], f=["x"]))
    task_id = view["task_id"]
    app.handle(c.FailStep(task_id=task_id, step_id=sid(view, "f")))
    with rejected(InvalidPlan, 400) as caught:
        replan(app, task_id, graph(a=[], g=["f"]))
    assert caught.value.details == {"waiting": "g", "via": ["g", "f", "x"], "cancelled": "x"}
    # Keeping x in the plan is fine.
    reply = replan(app, task_id, graph(a=[], x=["a"], g=["f"]))
    assert reply["diff"] == {"added": ["g"], "changed": [], "removed": []}


def test_a_chain_of_failed_steps_left_out_is_dropped_whatever_their_order_in_the_task(app):
    # d waits on c, and both failed while pending; a plan that leaves both out drops both,
    # whether c comes before d in the task or after it.
    first = create(app, graph(a=[], x=["a"], c=["x"], d=["c"]))
    second = create(app, graph(a=[], x=["a"], d=[]))
    replan(app, second["task_id"], graph(a=[], x=["a"], d=["c"], c=["x"]))
    for view in (first, app.task_view(second["task_id"])):
        for name in ("c", "d"):
            app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, name)))
        reply = replan(app, view["task_id"], graph(a=[], x=["a"]))
        assert {k: v for k, v in statuses(reply).items() if k in "cd"} == {
            "c": "skipped",
            "d": "skipped",
        }


def test_a_refusal_for_a_step_cancelled_before_says_to_skip_the_failed_step(app, rejected):
    # x was cancelled by an earlier replan while f, which follows it, failed; a graph in which
    # g waits on f cancels nothing, so the advice is to skip f, not to keep x.
    view = create(app, seq("a", "x", "f"))
    task_id = view["task_id"]
    app.handle(c.FailStep(task_id=task_id, step_id=sid(view, "f")))
    replan(app, task_id, seq("a", "f", "g"))
    with rejected(InvalidPlan, 400) as caught:
        replan(app, task_id, graph(a=[], g=["f"]))
    assert caught.value.details == {"waiting": "g", "via": ["g", "f", "x"], "cancelled": "x"}
    assert "Skip the failed step 'f'" in str(caught.value)


def test_the_current_step_rule_is_reported_before_a_wait_for_ever(app, rejected):
    # a (current) listed after the failed g would both wait on an unfinished step and, as g
    # keeps waiting on a, on a cycle: the older, more specific refusal is the one given.
    view = create(app, seq("a", "g"))
    app.handle(c.FailStep(task_id=view["task_id"], step_id=sid(view, "g")))
    with rejected(InvalidPlan, 400) as caught:
        replan(app, view["task_id"], seq("g", "a"))
    assert caught.value.details == {"step_name": "a", "blocking": ["g"]}
