"""task.context: an entry on the task and every step of it."""

from __future__ import annotations

from baton.domain import commands as c
from baton.domain.errors import InvalidTransition
from tests.unit.support import create, graph, seq, sid, step


def test_context_is_added_to_the_task_and_every_step(app):
    view = create(app, seq("a", "b", "c"))
    reply = app.handle(c.AddContext(task_id=view["task_id"], key="repo", value={"url": "x"}))
    assert reply["context"] == {"repo": {"url": "x"}}
    assert all(s["context"] == {"repo": {"url": "x"}} for s in reply["steps"])


def test_a_later_entry_with_the_same_key_replaces_the_earlier_one(app):
    view = create(app, seq("a"))
    app.handle(c.AddContext(task_id=view["task_id"], key="k", value=1))
    reply = app.handle(c.AddContext(task_id=view["task_id"], key="k", value=2))
    assert reply["context"] == {"k": 2} and reply["steps"][0]["context"] == {"k": 2}


def test_steps_added_by_a_replan_carry_the_task_context(app):
    view = create(app, seq("a", "b", context={"plan": 1}))
    app.handle(c.AddContext(task_id=view["task_id"], key="k", value="v"))
    reply = app.handle(c.ReplanTask(task_id=view["task_id"], plan=seq("a", "b", "c")))
    assert step(reply, "c")["context"] == {"plan": 1, "k": "v"}


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
