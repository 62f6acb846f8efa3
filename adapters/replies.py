"""The replies of Baton's contract, as pydantic models faithful to the contract and to
``baton.domain.views``: what each subject answers, what is published, and the planner's messages.

Requests are the models of ``baton.domain.commands`` (what the service validates). These models
allow extra fields (``additionalProperties: true``) so clients tolerate additions; a test checks
that the real replies carry no field these models do not name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from baton.domain.plans import Plan

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
    max_attempts: int = Field(
        default=1, description="Attempts its retry policy allows (1: no automatic retry)."
    )
    context: dict[str, Any] = Field(
        description="In a reply that returns this step alone: the task's context with its "
        "completed dependencies' results over it. In a task view: the dependencies' results "
        "only (the task's context is given once, at the top)."
    )
    parent_action_id: str | None = None
    claimed_by: str | None = None
    claim_id: str | None = Field(
        default=None,
        description="The claim holding the step: new for every claim; pass it to "
        "step.complete/fail/skip/heartbeat to act only while the claim holds.",
    )
    lease_expires_at: float | None = Field(
        default=None, description="When the claim's lease runs out (epoch seconds)."
    )
    retry_at: float | None = Field(
        default=None, description="A failed attempt's step is ready again from this time."
    )
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
    sequential: bool | None = Field(
        default=None,
        description="A sequential plan (no depends_on given): a step waits for every earlier "
        "step to be completed, skipped or cancelled.",
    )
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
    """Reply of ``step.complete|fail|skip|retry|heartbeat``: the step, and its task's status
    after it."""

    task_status: TaskStatus


class CompleteReply(StepCommandReply):
    """Reply of ``step.complete``; with ``claim_next``, the next claim's reply under ``next``."""

    next: ClaimReply | None = Field(
        default=None, description="With claim_next: the claim made after the completion."
    )


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
    triggers: list[Trigger] = Field(description="Triggers not fired yet.")
    cursor: str | None = Field(
        default=None, description="Pass as ``after`` for the next page of steps (null: last)."
    )


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
    cursor: str | None = Field(
        default=None, description="Pass as ``after`` for the next page (null: the last page)."
    )


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
