"""task.context: an entry on the task, seen by every step of it.

A task view gives the context once, at the top; a step returned alone (a claim) sees it merged
with its dependencies' results."""

from __future__ import annotations

from baton.domain import commands as c
from baton.domain.errors import InvalidTransition
from tests.plans import graph, seq
from tests.unit.support import create, sid, step


def test_context_is_added_to_the_task_once_and_every_claimed_step_sees_it(app):
    view = create(app, seq("a", "b", "c"))
    reply = app.handle(c.AddContext(task_id=view["task_id"], key="repo", value={"url": "x"}))
    assert reply["context"] == {"repo": {"url": "x"}}
    assert all(s["context"] == {} for s in reply["steps"])  # given once, at the top
    claimed = app.handle(c.ClaimStep(task_id=view["task_id"]))["step"]
    assert claimed["context"] == {"repo": {"url": "x"}}


def test_a_later_entry_with_the_same_key_replaces_the_earlier_one(app):
    view = create(app, seq("a"))
    app.handle(c.AddContext(task_id=view["task_id"], key="k", value=1))
    reply = app.handle(c.AddContext(task_id=view["task_id"], key="k", value=2))
    assert reply["context"] == {"k": 2}
    assert app.handle(c.ClaimStep(task_id=view["task_id"]))["step"]["context"] == {"k": 2}


def test_steps_added_by_a_replan_see_the_task_context(app):
    view = create(app, seq("a", "b", context={"plan": 1}))
    app.handle(c.AddContext(task_id=view["task_id"], key="k", value="v"))
    app.handle(c.ReplanTask(task_id=view["task_id"], plan=graph(a=[], c=[])))
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    claimed = app.handle(c.ClaimStep(task_id=view["task_id"]))["step"]
    assert claimed["step_name"] == "c" and claimed["context"] == {"plan": 1, "k": "v"}


def test_a_context_of_any_size_is_stored_once_in_the_task_view(app):
    big = "x" * 50_000
    view = create(app, seq(*[f"s{i}" for i in range(200)], context={"big": big}))
    reply = app.handle(c.AddContext(task_id=view["task_id"], key="more", value=big))
    assert len(str(reply)) < 3 * len(big) + 200 * 1000


def test_a_step_added_after_its_dependency_completed_carries_that_result(app):
    view = create(app, graph(a=[], b=[]))
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a"), result={"n": 1}))
    reply = app.handle(c.ReplanTask(task_id=view["task_id"], plan=graph(b=[], z=["a"])))
    assert step(reply, "z")["context"] == {"a": {"n": 1}}


def test_context_on_an_ended_task_is_409(app, rejected):
    view = create(app, seq("a"))
    app.handle(c.CompleteTask(task_id=view["task_id"]))
    with rejected(InvalidTransition, 409):
        app.handle(c.AddContext(task_id=view["task_id"], key="k", value=1))


def test_context_values_survive_a_replay(app):
    view = create(app, seq("a", "b"))
    app.handle(c.AddContext(task_id=view["task_id"], key="k", value=[1, {"x": None}]))
    replayed = app.repository.get(app.get_task(view["task_id"]).id, deepcopy_from_cache=False)
    live = app.task_view(view["task_id"])
    assert replayed.context == live["context"] == {"k": [1, {"x": None}]}
