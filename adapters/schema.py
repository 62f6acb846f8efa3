"""The published interface as documents: an AsyncAPI 3.0 description of every subject and message,
and a JSON Schema per message, generated from the pydantic models.

Requests are the models of ``baton.domain.commands`` (what the service validates). Replies and
publications are described here by models faithful to the contract and to ``baton.domain.views``;
they allow extra fields (``additionalProperties: true``) so clients tolerate additions, and a test
checks that the real replies carry no field these models do not name.

``baton schema --out docs`` writes ``asyncapi.json`` and ``schemas/<Model>.json``; a test checks
that regenerating gives exactly the committed files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from baton.domain import commands as c
from baton.domain.plans import Plan
from baton.domain.services import SUBJECTS

StepStatus = Literal["pending", "current", "completed", "failed", "skipped", "cancelled"]
TaskStatus = Literal["queued", "running", "completed", "error", "cancelled"]
QueueStatus = Literal["in_progress", "blocked", "done", "failed"]


class Reply(BaseModel):
    """Base of reply and publication models: extra fields are allowed (additive evolution)."""

    model_config = ConfigDict(extra="allow")


# -- the task view ------------------------------------------------------------------------------


class TriggerPayload(Reply):
    """What an agent needs to act on a trigger."""

    parent_action_id: str | None = Field(
        description="A fresh id given to the step each time it becomes current."
    )
    step_name: str | None = None
    task_name: str | None = None


class Trigger(Reply):
    """The signal that an agent should act now (published on ``baton.trigger.<session_id>``)."""

    trigger_id: str
    task_id: str
    step_id: str
    session_id: str
    fire_at: float = Field(description="Unix seconds; the trigger is published within 1 s of it.")
    priority: int = Field(description="Lower is more urgent; default 5.")
    next_action_description: str
    payload: TriggerPayload


class StepView(Reply):
    """One step of a task view; command replies that return a step return one of these."""

    task_id: str
    step_id: str
    step_index: int
    step_name: str
    description: str
    action_instruction: str | None
    validation_instruction: str | None
    depends_on: list[str]
    status: StepStatus
    ready: bool = Field(description="Pending with every dependency completed or skipped.")
    blocked: bool = Field(description="Pending with a dependency not yet completed or skipped.")
    attempts: int = Field(description="How many times the step has become current.")
    context: dict[str, Any]
    parent_action_id: str | None = None
    claimed_by: str | None = None
    result: Any = None
    failure_message: str | None = None


class TaskView(Reply):
    """A task as the contract shows it (``baton.query.task`` and most command replies)."""

    task_id: str
    task_name: str
    task_instruction: str
    session_id: str
    status: TaskStatus
    priority: int
    goal: str | None
    inputs_params: dict[str, Any]
    context: dict[str, Any]
    version: int
    workspace: str | None
    created_at: float | None = None
    updated_at: float | None = None
    message: str | None = None
    trigger: Trigger | None = None
    current_step: StepView | None = None
    steps: list[StepView]


class PlanDiff(Reply):
    """The step names a replan added, changed and removed."""

    added: list[str]
    changed: list[str]
    removed: list[str]


class Advance(Reply):
    """How ``advance_next`` moved the task after a replan."""

    status: Literal["queued", "completed", "no_next_step"]
    trigger: Trigger | None = None


class ReplanReply(TaskView):
    """The task view after a replan, with the diff."""

    diff: PlanDiff
    advance: Advance | None = None


class StartReply(Reply):
    """Reply of ``task.start``."""

    status: Literal["queued", "no_next_step"]
    step: StepView | None = None
    trigger: Trigger | None = None


class NextReply(Reply):
    """Reply of ``task.next``."""

    status: Literal["queued", "completed", "no_next_step"]
    step: StepView | None = None
    trigger: Trigger | None = None


class ClaimReply(Reply):
    """Reply of ``step.claim``: a step, or ``null`` and why there is none."""

    step: StepView | None
    queue_status: QueueStatus


class StepCommandReply(StepView):
    """Reply of ``step.complete|fail|skip|retry``: the step, and its task's status after it."""

    task_status: TaskStatus


class TaskSummary(Reply):
    """One task of a ``query.tasks`` page."""

    task_id: str
    task_name: str
    session_id: str
    status: TaskStatus
    priority: int
    version: int
    created_at: float | None = None
    updated_at: float | None = None
    steps_total: int | None = None
    steps_by_status: dict[str, int] | None = None
    current_step: str | None = None


class TasksPage(Reply):
    """Reply of ``query.tasks``; pass ``cursor`` as ``after`` for the next page."""

    tasks: list[TaskSummary]
    cursor: str | None


class QueueStep(StepView):
    """A ready or current-unclaimed step in the queue."""

    task_name: str | None = None
    session_id: str | None = None
    priority: int | None = None
    fire_at: float | None = None


class QueueReply(Reply):
    """Reply of ``query.queue``: claimable steps, most urgent first, and pending triggers."""

    steps: list[QueueStep]
    triggers: list[Trigger]


class HistoryEvent(Reply):
    """One event of a task, in order."""

    task_id: str
    type: str = Field(description="The event's class, e.g. StepCompleted.")
    version: int
    timestamp: float
    step_id: str | None = None
    data: dict[str, Any]
    display_message: str


class ProgressEvent(HistoryEvent):
    """Published on ``baton.progress.<task_id>``: a history event, Nats-Msg-Id
    ``<aggregate id>:<version>``."""


class HistoryReply(Reply):
    """Reply of ``query.history`` without ``version``."""

    task_id: str
    events: list[HistoryEvent]


class HistoryAtVersion(Reply):
    """Reply of ``query.history`` with ``version``: the task view as it was then."""

    task_id: str
    version: int
    task: TaskView


class ActiveReply(RootModel[TaskView | None]):
    """Reply of ``query.active``: the session's running task, or ``null``."""


class HistoryQueryReply(RootModel[HistoryReply | HistoryAtVersion]):
    """Reply of ``query.history``."""


class ErrorBody(BaseModel):
    code: int = Field(description="400, 404, 409, 413, 500 or 503.")
    reason: str = Field(description="e.g. invalid_request, not_found, invalid_transition.")
    message: str
    details: Any = None


class ErrorReply(BaseModel):
    """Any failed request; also carries the headers Nats-Service-Error(-Code)."""

    error: ErrorBody


class PlanRequest(BaseModel):
    """Sent by Baton to ``baton.planner.plan`` when a task is created without a plan."""

    task_name: str
    task_instruction: str


class ReplanRequest(BaseModel):
    """Sent by Baton to ``baton.planner.replan`` on a replan without a plan."""

    task: TaskView
    advance_next: bool


class PlanEnvelope(BaseModel):
    plan: Plan


class PlannerReply(RootModel[Plan | PlanEnvelope]):
    """A planner's answer: a plan, or ``{plan}``."""


# -- the subjects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One request/reply subject (after the prefix)."""

    subject: str
    summary: str
    request: type[BaseModel]
    reply: type[BaseModel]


COMMAND_SUMMARIES: dict[type[c.Command], tuple[str, type[BaseModel]]] = {
    c.CreateTask: (
        "New task; its first ready step becomes current. Without a plan Baton asks the planner.",
        TaskView,
    ),
    c.StartTask: ("Schedules a trigger for the current step.", StartReply),
    c.NextStep: (
        "Completes the current step and makes the next ready one current (with a trigger).",
        NextReply,
    ),
    c.ReplanTask: ("Revises the plan; the reply carries the diff.", ReplanReply),
    c.CompleteTask: ("Ends the task as completed.", TaskView),
    c.FailTask: ("Ends the task as error.", TaskView),
    c.CancelTask: ("Ends the task as cancelled; pending steps are cancelled.", TaskView),
    c.AddContext: ("Adds a context entry to the task and each of its steps.", TaskView),
    c.ClaimStep: ("Hands a worker the most urgent claimable step.", ClaimReply),
    c.CompleteStep: (
        "Completes a step; its result enters its direct dependents' context.",
        StepCommandReply,
    ),
    c.FailStep: ("Fails a step (the task keeps running).", StepCommandReply),
    c.SkipStep: ("Skips a step; it satisfies its dependents.", StepCommandReply),
    c.RetryStep: ("Puts a failed step back to pending.", StepCommandReply),
}

QUERIES: list[Endpoint] = [
    Endpoint("query.active", "The session's running task, or null.", c.ActiveQuery, ActiveReply),
    Endpoint("query.task", "The task view.", c.TaskQuery, TaskView),
    Endpoint("query.tasks", "A page of task summaries.", c.TasksQuery, TasksPage),
    Endpoint("query.queue", "Claimable steps and pending triggers.", c.QueueQuery, QueueReply),
    Endpoint(
        "query.history",
        "The task's events in order, or the task view at a version.",
        c.HistoryQuery,
        HistoryQueryReply,
    ),
]

PLANNER: list[Endpoint] = [
    Endpoint("planner.plan", "Baton asks for a plan for a new task.", PlanRequest, PlannerReply),
    Endpoint("planner.replan", "Baton asks for a revised plan.", ReplanRequest, PlannerReply),
]


def commands() -> list[Endpoint]:
    return [
        Endpoint(SUBJECTS[model], summary, model, reply)
        for model, (summary, reply) in COMMAND_SUMMARIES.items()
    ]


def all_models() -> list[type[BaseModel]]:
    """Every model the documents describe, each once, in a stable order."""
    seen: dict[str, type[BaseModel]] = {}
    for endpoint in [*commands(), *QUERIES, *PLANNER]:
        for model in (endpoint.request, endpoint.reply):
            seen.setdefault(model.__name__, model)
    for model in (Trigger, ProgressEvent, ErrorReply):
        seen.setdefault(model.__name__, model)
    return list(seen.values())


def _camel(subject: str) -> str:
    head, *rest = subject.replace("_", ".").split(".")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


MODE: JsonSchemaMode = "validation"


def asyncapi(prefix: str = "baton") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every subject under ``prefix``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("baton")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        app_version = "0.0.0"
    models = all_models()
    _, defs = models_json_schema(
        [(m, MODE) for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas = defs.get("$defs", {})

    def message(model: type[BaseModel], headers: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "name": model.__name__,
            "title": model.__name__,
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
        }
        doc = (model.__doc__ or "").strip()
        if doc:
            msg["summary"] = " ".join(doc.split())
        if headers:
            msg["headers"] = headers
        return msg

    command_headers = {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "Idempotency key: a repeat gets the first reply and changes "
                "nothing (wins over command_id).",
            }
        },
    }
    error_headers = {
        "type": "object",
        "properties": {
            "Nats-Service-Error": {"type": "string"},
            "Nats-Service-Error-Code": {"type": "string"},
        },
    }
    messages: dict[str, Any] = {}
    for model in models:
        if issubclass(model, c.Command):
            messages[model.__name__] = message(model, command_headers)
        elif model is ErrorReply:
            messages[model.__name__] = message(model, error_headers)
        else:
            messages[model.__name__] = message(model)

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    reply_messages: set[str] = {ErrorReply.__name__}

    def msg_ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/messages/{model.__name__}"}

    groups = [("command", commands()), ("query", QUERIES), ("planner", PLANNER)]
    for kind, endpoints in groups:
        for ep in endpoints:
            channel_id = _camel(ep.subject)
            channels[channel_id] = {
                "address": f"{prefix}.{ep.subject}",
                "title": ep.subject,
                "messages": {ep.request.__name__: msg_ref(ep.request)},
            }
            reply_messages.add(ep.reply.__name__)
            operation: dict[str, Any] = {
                # Baton receives commands and queries; it sends planner requests.
                "action": "send" if kind == "planner" else "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": ep.summary,
                "tags": [{"name": kind}],
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{ep.request.__name__}"}],
                "reply": {
                    "address": {
                        "location": "$message.header#/replyTo",
                        "description": "The request's NATS reply inbox.",
                    },
                    "channel": {"$ref": "#/channels/replyInbox"},
                    "messages": [
                        {"$ref": f"#/channels/replyInbox/messages/{ep.reply.__name__}"},
                        {"$ref": "#/channels/replyInbox/messages/ErrorReply"},
                    ],
                },
            }
            operations[channel_id] = operation
    channels["replyInbox"] = {
        "address": None,
        "title": "reply inbox",
        "description": "The NATS inbox a request names as its reply subject.",
        "messages": {
            name: {"$ref": f"#/components/messages/{name}"} for name in sorted(reply_messages)
        },
    }
    channels["trigger"] = {
        "address": f"{prefix}.trigger.{{session_id}}",
        "title": "trigger",
        "description": "JetStream stream BATON_TRIGGERS; each trigger once, when due; "
        "Nats-Msg-Id = trigger_id.",
        "parameters": {"session_id": {"description": "The session the trigger is for."}},
        "messages": {"Trigger": msg_ref(Trigger)},
    }
    channels["progress"] = {
        "address": f"{prefix}.progress.{{task_id}}",
        "title": "progress",
        "description": "JetStream stream BATON_PROGRESS; every event of the task, in order; "
        "Nats-Msg-Id = <aggregate id>:<version>.",
        "parameters": {"task_id": {"description": "The task the events belong to."}},
        "messages": {"ProgressEvent": msg_ref(ProgressEvent)},
    }
    operations["publishTrigger"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/trigger"},
        "summary": "A due trigger, published within 1 s of fire_at, exactly once.",
        "tags": [{"name": "published"}],
        "messages": [{"$ref": "#/channels/trigger/messages/Trigger"}],
    }
    operations["publishProgress"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/progress"},
        "summary": "Every event of a task, in order, exactly once.",
        "tags": [{"name": "published"}],
        "messages": [{"$ref": "#/channels/progress/messages/ProgressEvent"}],
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Baton",
            "version": app_version,
            "description": (
                "Task-lifecycle service: event-sourced tasks and steps, served over NATS as the "
                f"micro service `baton` (queue group `baton`). Subjects start with `{prefix}` "
                "(BATON_SUBJECT_PREFIX). Requests and replies are JSON; a failed request gets "
                "an ErrorReply."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "BATON_NATS_URL (default nats://127.0.0.1:4222).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """A standalone JSON Schema (draft 2020-12) per model, keyed by model name."""
    out: dict[str, dict[str, Any]] = {}
    for model in all_models():
        schema = model.model_json_schema(mode=MODE)
        out[model.__name__] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"schemas/{model.__name__}.json",
            **schema,
        }
    return out


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_documents(prefix: str = "baton") -> dict[str, str]:
    """Every file ``write_documents`` writes, relative path -> text."""
    files = {"asyncapi.json": dumps(asyncapi(prefix))}
    for name, schema in json_schemas().items():
        files[f"schemas/{name}.json"] = dumps(schema)
    return files


def write_documents(out: Path, prefix: str = "baton") -> list[Path]:
    """Writes the AsyncAPI document and the JSON Schemas under ``out``; removes stale schemas."""
    files = render_documents(prefix)
    schemas_dir = out / "schemas"
    schemas_dir.mkdir(parents=True, exist_ok=True)
    for stale in schemas_dir.glob("*.json"):
        if f"schemas/{stale.name}" not in files:
            stale.unlink()
    written = []
    for rel, text in files.items():
        path = out / rel
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
