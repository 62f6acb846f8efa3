"""Small helpers shared by the domain tests: an in-memory app, plans, and readers of views."""

from __future__ import annotations

from typing import Any

from baton.domain import commands as c
from baton.domain.services import BatonApp

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


class FakeClock:
    """A clock the tests move by hand, so trigger times are exact."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_app(env: dict[str, str] | None = None, **kwargs: Any) -> BatonApp:
    return BatonApp(dict(env or POPO), **kwargs)


def create(app: BatonApp, plan: dict[str, Any], **fields: Any) -> dict[str, Any]:
    fields.setdefault("task_name", "demo")
    view: dict[str, Any] = app.handle(c.CreateTask(plan=plan, **fields))
    return view


def statuses(view: dict[str, Any]) -> dict[str, str]:
    return {s["step_name"]: s["status"] for s in view["steps"]}


def step(view: dict[str, Any], name: str) -> dict[str, Any]:
    for s in view["steps"]:
        if s["step_name"] == name:
            return dict(s)
    raise AssertionError(f"no step {name!r} in the view")


def sid(view: dict[str, Any], name: str) -> str:
    return str(step(view, name)["step_id"])


def notification_count(app: BatonApp) -> int:
    return app.recorder.max_notification_id() or 0
