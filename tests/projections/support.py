"""Helpers for the projection tests: commands in one line (plans: tests/plans.py)."""

from __future__ import annotations

from typing import Any

from baton.domain import commands as c
from baton.domain.services import BatonApp


def create(app: BatonApp, plan: dict[str, Any], **fields: Any) -> str:
    """Creates a task; returns its id."""
    fields.setdefault("task_name", "demo")
    return str(app.handle(c.CreateTask(plan=plan, **fields))["task_id"])


def step_id(app: BatonApp, task_id: str, name: str) -> str:
    for step in app.task_view(task_id)["steps"]:
        if step["step_name"] == name:
            return str(step["step_id"])
    raise KeyError(name)
