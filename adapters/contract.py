"""The contract table: every request/reply subject of Baton, in one place.

Each row names a subject (after the prefix, ``BATON_SUBJECT_PREFIX``), the model that validates
its request, the model that describes its reply, its kind, and a one-line summary; and who speaks
it: the ``BatonClient`` method, the ``baton`` CLI command and, for a query, the read-side method
that answers it. Every consumer reads this table and declares no subject of its own:

- the service (``service.py``) serves one micro endpoint per row and dispatches from it;
- the typed client (``client.py``) finds each method's subject here by its request model;
- the schema generator (``schema.py``) documents every row (``docs/asyncapi.json``);
- the CLI (``cli/``) registers one command per row, with the row's summary as its help.

``tests/integration/test_contract_table.py`` fails when any of them disagrees with the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel

from baton.adapters import replies as r
from baton.domain import commands as c

Kind = Literal["command", "query", "planner"]


@dataclass(frozen=True)
class Subject:
    """One request/reply subject of the contract."""

    name: str
    """The subject after the prefix, e.g. ``task.create``."""
    request: type[BaseModel]
    """The model that validates the request body."""
    reply: type[BaseModel]
    """The model that describes a successful reply."""
    kind: Kind
    """``command`` (changes state, idempotent by ``Nats-Msg-Id``), ``query`` (answered from the
    projections) or ``planner`` (Baton asks; a planner answers)."""
    summary: str
    """One line, for the AsyncAPI document and the CLI's help."""
    client: str = ""
    """The ``BatonClient`` method that sends it ('' for planner subjects)."""
    cli: str = ""
    """The ``baton`` command that sends it, e.g. ``task create`` ('' for planner subjects)."""
    answer: str = ""
    """For a query: the read side's method (``Queries``), called with the request's fields."""

    def address(self, prefix: str) -> str:
        """The full subject under ``prefix``."""
        return f"{prefix}.{self.name}"

    @property
    def endpoint(self) -> str:
        """The micro endpoint name: ``task.create`` -> ``task-create``."""
        return self.name.replace(".", "-")


def _command(
    name: str, request: type[c.Command], reply: type[BaseModel], summary: str, client: str, cli: str
) -> Subject:
    return Subject(name, request, reply, "command", summary, client, cli)


def _query(
    name: str, request: type[c.Request], reply: type[BaseModel], summary: str, client: str, cli: str
) -> Subject:
    return Subject(name, request, reply, "query", summary, client, cli, answer=client)


# fmt: off
#: Every subject the service answers: commands, then queries.
SERVED: Final[tuple[Subject, ...]] = (
    _command("task.create", c.CreateTask, r.TaskView,
             "New task; its first ready step becomes current. Without a plan Baton asks the "
             "planner.", "create_task", "task create"),
    _command("task.start", c.StartTask, r.StartReply,
             "Schedules a trigger for the current step.", "start_task", "task start"),
    _command("task.next", c.NextStep, r.NextReply,
             "Completes the current step and makes the next ready one current (with a trigger).",
             "next_step", "task next"),
    _command("task.replan", c.ReplanTask, r.ReplanReply,
             "Revises the plan; the reply carries the diff.", "replan_task", "task replan"),
    _command("task.complete", c.CompleteTask, r.TaskView,
             "Ends the task as completed.", "complete_task", "task complete"),
    _command("task.fail", c.FailTask, r.TaskView,
             "Ends the task as error.", "fail_task", "task fail"),
    _command("task.cancel", c.CancelTask, r.TaskView,
             "Ends the task as cancelled; pending steps are cancelled.", "cancel_task",
             "task cancel"),
    _command("task.context", c.AddContext, r.TaskView,
             "Adds a context entry to the task and each of its steps.", "add_context", "context"),
    _command("step.claim", c.ClaimStep, r.ClaimReply,
             "Hands a worker the most urgent claimable step.", "claim_step", "step claim"),
    _command("step.complete", c.CompleteStep, r.CompleteReply,
             "Completes a step; its result enters its direct dependents' context.",
             "complete_step", "step complete"),
    _command("step.fail", c.FailStep, r.StepCommandReply,
             "Fails a step (the task keeps running).", "fail_step", "step fail"),
    _command("step.skip", c.SkipStep, r.StepCommandReply,
             "Skips a step; it satisfies its dependents.", "skip_step", "step skip"),
    _command("step.retry", c.RetryStep, r.StepCommandReply,
             "Puts a failed step back to pending.", "retry_step", "step retry"),
    _command("step.heartbeat", c.HeartbeatStep, r.StepCommandReply,
             "Extends a held claim's lease; 409 when the claim no longer holds the step.",
             "heartbeat_step", "step heartbeat"),
    _query("query.active", c.ActiveQuery, r.ActiveReply,
           "The session's running task, or null.", "active", "active"),
    _query("query.task", c.TaskQuery, r.TaskView, "The task view.", "task", "show"),
    _query("query.tasks", c.TasksQuery, r.TasksPage, "A page of task summaries.", "tasks", "ls"),
    _query("query.queue", c.QueueQuery, r.QueueReply,
           "Claimable steps and pending triggers.", "queue", "queue"),
    _query("query.history", c.HistoryQuery, r.HistoryQueryReply,
           "The task's events in order, or the task view at a version.", "history", "history"),
)

#: The subjects Baton asks on (a planner service answers them).
PLANNER: Final[tuple[Subject, ...]] = (
    Subject("planner.plan", r.PlanRequest, r.PlannerReply, "planner",
            "Baton asks for a plan for a new task."),
    Subject("planner.replan", r.ReplanRequest, r.PlannerReply, "planner",
            "Baton asks for a revised plan."),
)
# fmt: on

#: The JetStream subjects Baton publishes on (templates after the prefix).
TRIGGER: Final = "trigger.{session_id}"
PROGRESS: Final = "progress.{task_id}"

BY_NAME: Final[dict[str, Subject]] = {s.name: s for s in (*SERVED, *PLANNER)}
BY_REQUEST: Final[dict[type[BaseModel], Subject]] = {s.request: s for s in (*SERVED, *PLANNER)}

PLANNER_PLAN: Final = BY_NAME["planner.plan"]
PLANNER_REPLAN: Final = BY_NAME["planner.replan"]


def commands() -> Iterator[Subject]:
    """The command rows, in table order."""
    return (s for s in SERVED if s.kind == "command")


def queries() -> Iterator[Subject]:
    """The query rows, in table order."""
    return (s for s in SERVED if s.kind == "query")


def waits_on_planner(subject: str, payload: Mapping[str, Any]) -> bool:
    """Whether this request may make the service ask the planner (up to its
    ``BATON_PLANNER_TIMEOUT_S``) before it replies: a create without a plan, a replan without
    one, a next with ``replan`` and no plan."""
    if payload.get("plan") is not None:
        return False
    if subject in ("task.create", "task.replan"):
        return True
    return subject == "task.next" and bool(payload.get("replan"))


def subject_of(request: type[BaseModel]) -> str:
    """The subject (after the prefix) whose request ``request`` is."""
    return BY_REQUEST[request].name


def trigger_subject(prefix: str, session_id: str) -> str:
    """Where a session's triggers are published (``>`` for every session)."""
    return f"{prefix}.{TRIGGER.format(session_id=session_id)}"


def progress_subject(prefix: str, task_id: str) -> str:
    """Where a task's events are published (``>`` for every task)."""
    return f"{prefix}.{PROGRESS.format(task_id=task_id)}"
