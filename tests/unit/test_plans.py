"""Plans: sequential versus dependency graph, and the plans that are rejected."""

from __future__ import annotations

import pytest

from baton.domain import commands as c
from baton.domain.errors import InvalidPlan
from baton.domain.plans import Plan, find_cycle, is_sequential, resolve
from tests.plans import graph, seq
from tests.unit.support import create, statuses, step


def test_a_plan_without_depends_on_chains_each_step_to_the_one_before(app):
    view = create(app, seq("a", "b", "c"))
    assert [s["depends_on"] for s in view["steps"]] == [[], ["a"], ["b"]]


def test_an_empty_depends_on_anywhere_makes_the_plan_a_graph(app):
    plan = {"steps": [{"step_name": "a"}, {"step_name": "b", "depends_on": []}, {"step_name": "c"}]}
    assert not is_sequential(Plan.model_validate(plan))
    view = create(app, plan)
    assert [s["depends_on"] for s in view["steps"]] == [[], [], []]
    assert [s["ready"] for s in view["steps"]] == [False, True, True]


def test_a_graph_plan_keeps_the_dependencies_it_names(app):
    view = create(app, graph(a=[], b=[], c=["a", "b"]))
    assert step(view, "c")["depends_on"] == ["a", "b"]
    assert step(view, "c")["blocked"] is True


def test_repeated_dependencies_are_kept_once():
    specs = resolve(Plan.model_validate(graph(a=[], b=["a", "a"])))
    assert specs[1].depends_on == ("a",)


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({"steps": []}, "no steps"),
        (seq("a", "b", "a"), "unique"),
        (graph(a=[], b=["zz"]), "unknown"),
        (graph(a=["b"], b=["c"], c=["a"]), "cycle"),
        (graph(a=["a"]), "itself"),
    ],
    ids=["empty", "duplicate", "dangling", "cycle", "self-dependency"],
)
def test_an_invalid_plan_is_rejected_with_400_and_nothing_is_created(app, rejected, plan, words):
    with rejected(InvalidPlan, 400):
        create(app, plan)
    with pytest.raises(InvalidPlan) as caught:
        create(app, plan)
    assert words in caught.value.message
    assert caught.value.to_dict()["reason"] == "invalid_plan"


def test_the_cycle_error_names_the_cycle():
    with pytest.raises(InvalidPlan) as caught:
        resolve(Plan.model_validate(graph(a=["c"], b=["a"], c=["b"])))
    cycle = caught.value.details["cycle"]
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}


def test_find_cycle_finds_none_in_a_diamond():
    assert find_cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None


def test_a_blank_step_name_is_a_malformed_request():
    with pytest.raises(ValueError):
        c.CreateTask(task_name="t", plan={"steps": [{"step_name": "  "}]})


def test_a_plan_with_unknown_fields_is_a_malformed_request():
    with pytest.raises(ValueError):
        c.CreateTask(task_name="t", plan={"steps": [{"step_name": "a", "bogus": 1}]})


def test_goal_inputs_and_context_of_the_plan_reach_the_task_and_its_steps(app):
    view = create(app, seq("a", "b", goal="ship", inputs_params={"n": 1}, context={"k": "v"}))
    assert (view["goal"], view["inputs_params"], view["context"]) == ("ship", {"n": 1}, {"k": "v"})
    assert all(s["context"] == {} for s in view["steps"])  # the task's context: once, on top
    assert statuses(view) == {"a": "current", "b": "pending"}
