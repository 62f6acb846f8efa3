"""The published interface as documents: an AsyncAPI 3.0 description of every subject and message,
and a JSON Schema per message, generated from the pydantic models.

Every subject and its models come from the contract table (``baton.adapters.contract``): requests
are the models of ``baton.domain.commands`` (what the service validates), replies the models of
``baton.adapters.replies`` (re-exported here).

``baton schema --out docs`` writes ``asyncapi.json`` and ``schemas/<Model>.json``; a test checks
that regenerating gives exactly the committed files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from baton.adapters import contract
from baton.adapters.replies import (
    ActiveReply as ActiveReply,
)
from baton.adapters.replies import (
    Advance as Advance,
)
from baton.adapters.replies import (
    ClaimReply as ClaimReply,
)
from baton.adapters.replies import (
    ErrorBody as ErrorBody,
)
from baton.adapters.replies import (
    ErrorReply as ErrorReply,
)
from baton.adapters.replies import (
    HistoryAtVersion as HistoryAtVersion,
)
from baton.adapters.replies import (
    HistoryEvent as HistoryEvent,
)
from baton.adapters.replies import (
    HistoryQueryReply as HistoryQueryReply,
)
from baton.adapters.replies import (
    HistoryReply as HistoryReply,
)
from baton.adapters.replies import (
    NextReply as NextReply,
)
from baton.adapters.replies import (
    PlanDiff as PlanDiff,
)
from baton.adapters.replies import (
    PlanEnvelope as PlanEnvelope,
)
from baton.adapters.replies import (
    PlannerReply as PlannerReply,
)
from baton.adapters.replies import (
    PlanRequest as PlanRequest,
)
from baton.adapters.replies import (
    ProgressEvent as ProgressEvent,
)
from baton.adapters.replies import (
    QueueReply as QueueReply,
)
from baton.adapters.replies import (
    QueueStatus as QueueStatus,
)
from baton.adapters.replies import (
    QueueStep as QueueStep,
)
from baton.adapters.replies import (
    ReplanReply as ReplanReply,
)
from baton.adapters.replies import (
    ReplanRequest as ReplanRequest,
)
from baton.adapters.replies import (  # re-exported: the reply models
    Reply as Reply,
)
from baton.adapters.replies import (
    StartReply as StartReply,
)
from baton.adapters.replies import (
    StepCommandReply as StepCommandReply,
)
from baton.adapters.replies import (
    StepStatus as StepStatus,
)
from baton.adapters.replies import (
    StepView as StepView,
)
from baton.adapters.replies import (
    TasksPage as TasksPage,
)
from baton.adapters.replies import (
    TaskStatus as TaskStatus,
)
from baton.adapters.replies import (
    TaskSummary as TaskSummary,
)
from baton.adapters.replies import (
    TaskView as TaskView,
)
from baton.adapters.replies import (
    Trigger as Trigger,
)
from baton.adapters.replies import (
    TriggerPayload as TriggerPayload,
)
from baton.domain import commands as c


def all_models() -> list[type[BaseModel]]:
    """Every model the documents describe, each once, in a stable order."""
    seen: dict[str, type[BaseModel]] = {}
    for row in [*contract.SERVED, *contract.PLANNER]:
        for model in (row.request, row.reply):
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

    for ep in [*contract.SERVED, *contract.PLANNER]:
        kind = ep.kind
        channel_id = _camel(ep.name)
        channels[channel_id] = {
            "address": ep.address(prefix),
            "title": ep.name,
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
        "address": f"{prefix}.{contract.TRIGGER}",
        "title": "trigger",
        "description": "JetStream stream BATON_TRIGGERS; each trigger once, when due; "
        "Nats-Msg-Id = trigger_id.",
        "parameters": {"session_id": {"description": "The session the trigger is for."}},
        "messages": {"Trigger": msg_ref(Trigger)},
    }
    channels["progress"] = {
        "address": f"{prefix}.{contract.PROGRESS}",
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
