"""Commands and queries of the contract, as pydantic models (imperative names).

Every request is validated here before anything else happens: unknown fields, wrong types,
oversized texts and over-deep JSON are rejected with 400, before a planner is asked or a store
touched.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from baton.domain.ids import SESSION_ID_PATTERN
from baton.domain.limits import MAX_ID, MAX_LEASE_S, MAX_NAME, MAX_TEXT, check_json_depth
from baton.domain.plans import Plan


def _json_depth(value: Any) -> Any:
    check_json_depth(value)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


SessionId = Annotated[str, Field(pattern=SESSION_ID_PATTERN)]
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Json = Annotated[Any, AfterValidator(_json_depth)]
Priority = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_not_blank)]
#: A claim's lease, in seconds: 0 < lease_s <= a day.
LeaseS = Annotated[float, Field(gt=0, le=MAX_LEASE_S, allow_inf_nan=False)]
#: Versions and sequence numbers: SQLite and PostgreSQL integers are 64-bit.
Version = Annotated[int, Field(ge=1, le=2**63 - 1)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Command(Request):
    """A request that changes state. ``command_id`` makes a repeat return the first reply."""

    command_id: Identifier | None = None


class CreateTask(Command):
    task_name: Name
    task_instruction: Text = ""
    session_id: SessionId | None = None
    priority: Priority = 5
    plan: Plan | None = None


class StartTask(Command):
    task_id: Identifier
    delay_s: Annotated[float, Field(ge=0, le=366 * 24 * 3600, allow_inf_nan=False)] = 0.0
    priority: Priority | None = None


class NextStep(Command):
    task_id: Identifier
    replan: bool = False
    plan: Plan | None = None


class ReplanTask(Command):
    task_id: Identifier
    plan: Plan | None = None
    advance_next: bool = False


class CompleteTask(Command):
    task_id: Identifier
    message: Text | None = None


class FailTask(Command):
    task_id: Identifier
    message: Text | None = None


class CancelTask(Command):
    task_id: Identifier
    reason: Text | None = None


class AddContext(Command):
    task_id: Identifier
    key: Name
    value: Json = None


class ClaimStep(Command):
    session_id: SessionId | None = None
    task_id: Identifier | None = None
    worker: Name | None = None
    #: The claim's lease; None: the service's default (BATON_CLAIM_LEASE_S).
    lease_s: LeaseS | None = None


class CompleteStep(Command):
    task_id: Identifier
    step_id: Identifier
    result: Json = None
    claim_id: Identifier | None = None
    #: Claim the next step in the same reply (``next``), in the completed step's task or, with
    #: ``session_id``, in that session; ``worker`` and ``lease_s`` as ``step.claim`` takes them.
    claim_next: bool = False
    worker: Name | None = None
    session_id: SessionId | None = None
    lease_s: LeaseS | None = None


class FailStep(Command):
    task_id: Identifier
    step_id: Identifier
    message: Text | None = None
    claim_id: Identifier | None = None


class SkipStep(Command):
    task_id: Identifier
    step_id: Identifier
    message: Text | None = None
    claim_id: Identifier | None = None


class HeartbeatStep(Command):
    """Extends the lease of the claim ``claim_id`` (409 when it no longer holds the step)."""

    task_id: Identifier
    step_id: Identifier
    claim_id: Identifier
    lease_s: LeaseS | None = None


class ExpireClaim(Command):
    """Internal (the lease scanner's, never on the wire): ends a lapsed claim."""

    task_id: Identifier
    step_id: Identifier
    claim_id: Identifier


class RetryStep(Command):
    task_id: Identifier
    step_id: Identifier
    message: Text | None = None


class ActiveQuery(Request):
    session_id: SessionId


class TaskQuery(Request):
    task_id: Identifier


TaskStatusName = Literal["queued", "running", "completed", "error", "cancelled"]


class TasksQuery(Request):
    status: TaskStatusName | None = None
    session_id: SessionId | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    after: Annotated[str, Field(max_length=MAX_ID)] | None = None


class QueueQuery(Request):
    session_id: SessionId | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    #: The ``cursor`` of the previous page.
    after: Annotated[str, Field(max_length=MAX_ID)] | None = None


class HistoryQuery(Request):
    task_id: Identifier
    version: Version | None = None
    #: The ``cursor`` of the previous page (events after that version).
    after: Annotated[str, Field(max_length=MAX_ID)] | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 1000
