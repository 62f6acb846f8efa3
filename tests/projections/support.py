"""Helpers for the projection tests: plans and commands in one line."""

from __future__ import annotations

from typing import Any

from baton.domain import commands as c
from baton.domain.services import BatonApp


def seq(*names: str) -> dict[str, Any]:
    """A sequential plan."""
    return {"steps": [{"step_name": n, "description": f"do {n}"} for n in names]}


def graph(**deps: list[str]) -> dict[str, Any]:
    """A dependency-graph plan: ``graph(a=[], b=["a"])``."""
    return {
        "steps": [
            {"step_name": n, "description": f"do {n}", "depends_on": list(d)}
            for n, d in deps.items()
        ]
    }


def create(app: BatonApp, plan: dict[str, Any], **fields: Any) -> str:
    """Creates a task; returns its id."""
    fields.setdefault("task_name", "demo")
    return str(app.handle(c.CreateTask(plan=plan, **fields))["task_id"])


def step_id(app: BatonApp, task_id: str, name: str) -> str:
    for step in app.task_view(task_id)["steps"]:
        if step["step_name"] == name:
            return str(step["step_id"])
    raise KeyError(name)
