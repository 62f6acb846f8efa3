"""The published documents match the code, and the reply models describe real replies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from baton.adapters import schema as s
from baton.domain import commands as c
from baton.domain.services import BatonApp

DOCS = Path(__file__).resolve().parents[2] / "docs"

PLAN = {
    "goal": "a report",
    "steps": [
        {"step_name": "fetch", "description": "fetch the data", "depends_on": []},
        {"step_name": "summarise", "description": "summarise it", "depends_on": ["fetch"]},
        {"step_name": "extract", "description": "extract figures", "depends_on": ["fetch"]},
        {"step_name": "report", "description": "write it", "depends_on": ["summarise", "extract"]},
    ],
}


def assert_described(model: type[BaseModel], data: Any) -> BaseModel:
    """Validates ``data`` and checks it carries no field the model does not name."""
    instance = model.model_validate(data)
    _no_extras(instance, model.__name__)
    return instance


def _no_extras(value: Any, where: str) -> None:
    if isinstance(value, BaseModel):
        extra = value.model_extra or {}
        assert not extra, f"{where} has fields the schema does not name: {sorted(extra)}"
        for name in type(value).model_fields:
            _no_extras(getattr(value, name), f"{where}.{name}")
        root = getattr(value, "root", None)
        if root is not None:
            _no_extras(root, where)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_extras(item, f"{where}[{i}]")


def step_id(view: dict[str, Any], name: str) -> str:
    return next(st["step_id"] for st in view["steps"] if st["step_name"] == name)


# -- the documents ------------------------------------------------------------------------------


def test_regenerating_the_documents_gives_exactly_the_committed_files() -> None:
    expected = s.render_documents()
    committed = {
        str(p.relative_to(DOCS)): p.read_text(encoding="utf-8")
        for p in [DOCS / "asyncapi.json", *sorted((DOCS / "schemas").glob("*.json"))]
    }
    assert sorted(committed) == sorted(expected), "run `baton schema --out docs`"
    for name, text in expected.items():
        assert committed[name] == text, f"docs/{name} is stale: run `baton schema --out docs`"


def test_every_subject_of_the_contract_has_a_channel() -> None:
    doc = s.asyncapi()
    addresses = {ch["address"] for ch in doc["channels"].values()}
    for subject in [
        "task.create", "task.start", "task.next", "task.replan", "task.complete", "task.fail",
        "task.cancel", "task.context", "step.claim", "step.complete", "step.fail", "step.skip",
        "step.retry", "query.active", "query.task", "query.tasks", "query.queue",
        "query.history", "planner.plan", "planner.replan", "trigger.{session_id}",
        "progress.{task_id}",
    ]:  # fmt: skip
        assert f"baton.{subject}" in addresses


def test_every_schema_reference_resolves() -> None:
    doc = s.asyncapi()

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert node is not None, ref


def test_the_request_schemas_are_the_domain_models() -> None:
    assert (
        s.json_schemas()["CreateTask"]["properties"]
        == (c.CreateTask.model_json_schema()["properties"])
    )


# -- real replies against the models ------------------------------------------------------------


@pytest.fixture
def app() -> BatonApp:
    return BatonApp({"PERSISTENCE_MODULE": "eventsourcing.popo"})


def test_command_replies_match_the_reply_models(app: BatonApp) -> None:
    view = app.handle(c.CreateTask(task_name="report", session_id="s1", plan=PLAN))
    assert_described(s.TaskView, view)
    task_id = view["task_id"]

    started = app.handle(c.StartTask(task_id=task_id, delay_s=5))
    reply = assert_described(s.StartReply, started)
    assert isinstance(reply, s.StartReply) and reply.trigger is not None
    assert_described(s.Trigger, started["trigger"])

    completed = app.handle(
        c.CompleteStep(task_id=task_id, step_id=step_id(view, "fetch"), result={"rows": 3})
    )
    assert_described(s.StepCommandReply, completed)

    claimed = app.handle(c.ClaimStep(task_id=task_id, worker="w1"))
    assert_described(s.ClaimReply, claimed)
    assert claimed["step"]["claimed_by"] == "w1"

    failed = app.handle(
        c.FailStep(task_id=task_id, step_id=claimed["step"]["step_id"], message="boom")
    )
    assert_described(s.StepCommandReply, failed)
    assert failed["failure_message"] == "boom"
    assert_described(
        s.StepCommandReply, app.handle(c.RetryStep(task_id=task_id, step_id=failed["step_id"]))
    )
    assert_described(
        s.StepCommandReply, app.handle(c.SkipStep(task_id=task_id, step_id=failed["step_id"]))
    )
    assert_described(s.TaskView, app.handle(c.AddContext(task_id=task_id, key="k", value=[1])))

    replanned = app.handle(
        c.ReplanTask(task_id=task_id, plan={**PLAN, "steps": PLAN["steps"][:3]}, advance_next=True)
    )
    assert_described(s.ReplanReply, replanned)

    nxt = app.handle(c.NextStep(task_id=task_id))
    assert_described(s.NextReply, nxt)
    idle = app.handle(c.ClaimStep(task_id=task_id, worker="w1"))
    assert_described(s.ClaimReply, idle)
    assert idle["step"] is None

    other = app.handle(c.CreateTask(task_name="other", plan=PLAN))
    assert_described(s.TaskView, app.handle(c.CancelTask(task_id=other["task_id"], reason="x")))


def test_history_entries_and_old_versions_match_the_models(app: BatonApp) -> None:
    view = app.handle(c.CreateTask(task_name="report", plan=PLAN))
    task_id = view["task_id"]
    app.handle(c.StartTask(task_id=task_id))
    app.handle(c.CompleteTask(task_id=task_id, message="done early"))
    events = app.history(task_id)
    assert_described(s.HistoryReply, {"task_id": task_id, "events": events})
    for event in events:
        assert_described(s.ProgressEvent, event)
    then = app.task_view(task_id, version=1)
    assert_described(s.HistoryAtVersion, {"task_id": task_id, "version": 1, "task": then})
    assert_described(s.HistoryQueryReply, {"task_id": task_id, "events": events})


def test_an_error_reply_matches_the_error_model(app: BatonApp) -> None:
    from baton.domain.errors import BatonError

    with pytest.raises(BatonError) as caught:
        app.handle(c.StartTask(task_id="nope"))
    assert_described(s.ErrorReply, {"error": caught.value.to_dict()})
