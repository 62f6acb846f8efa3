"""Step, the entity of a task's plan, and the small ordered sets the Task keeps over its steps.

A ``Step`` holds only what its events say about it. What can be derived (is it ready, which
steps wait on it, the context it sees) lives in the Task's indexes and the views, so an event
changes one step and a few counters, never the whole plan.
"""

from __future__ import annotations

import heapq
from typing import Any, Final

from baton.domain.lifecycle import StepStatus

PENDING: Final = StepStatus.PENDING.value
CURRENT: Final = StepStatus.CURRENT.value
COMPLETED: Final = StepStatus.COMPLETED.value
FAILED: Final = StepStatus.FAILED.value
SKIPPED: Final = StepStatus.SKIPPED.value
CANCELLED: Final = StepStatus.CANCELLED.value

#: Fields of a step record, in the order of its stored dict (``as_dict``).
STEP_FIELDS: Final = (
    "step_id",
    "step_index",
    "step_name",
    "description",
    "action_instruction",
    "validation_instruction",
    "depends_on",
    "status",
    "claimed_by",
    "result",
    "failure_message",
    "attempts",
    "parent_action_id",
    "claim_id",
    "lease_expires_at",
    "max_attempts",
    "retry_delay_s",
    "retry_at",
)
_DEFAULTS: Final[dict[str, Any]] = {
    "description": "",
    "action_instruction": None,
    "validation_instruction": None,
    "depends_on": (),
    "status": PENDING,
    "claimed_by": None,
    "result": None,
    "failure_message": None,
    "attempts": 0,
    "parent_action_id": None,
    "claim_id": None,
    "lease_expires_at": None,
    "max_attempts": 1,
    "retry_delay_s": 1.0,
    "retry_at": None,
}


class Step:
    """One step of a task's plan (its stored fields only)."""

    __slots__ = STEP_FIELDS

    step_id: str
    step_index: int
    step_name: str
    description: str
    action_instruction: str | None
    validation_instruction: str | None
    depends_on: list[str]
    status: str
    claimed_by: str | None
    result: Any
    failure_message: str | None
    attempts: int
    parent_action_id: str | None
    #: The claim that holds the step: new for every claim, the fencing token of its holder.
    claim_id: str | None
    lease_expires_at: float | None
    #: Retry policy: attempts allowed in all, and the delay before the second one.
    max_attempts: int
    retry_delay_s: float
    #: A step waiting out its retry delay is ready only from this time on.
    retry_at: float | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        """A step from its record; keys it does not know (0.1 kept ``context`` per step) are
        ignored, and missing ones take their defaults."""
        step = object.__new__(cls)
        get = data.get
        for name in STEP_FIELDS:
            value = get(name, _DEFAULTS.get(name))
            setattr(step, name, value)
        step.depends_on = list(step.depends_on or ())
        return step

    def as_dict(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in STEP_FIELDS}
        record["depends_on"] = list(self.depends_on)
        return record

    def copy(self) -> Step:
        twin = object.__new__(Step)
        for name in STEP_FIELDS:
            setattr(twin, name, getattr(self, name))
        twin.depends_on = list(self.depends_on)
        return twin

    @property
    def label(self) -> str:
        return f"step {self.step_name!r}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Step):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in STEP_FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"Step({self.step_id!r}, {self.step_name!r}, {self.status})"


def retry_delay(step: Step, attempt: int) -> float:
    """The delay before attempt ``attempt + 1``: ``retry_delay_s`` doubled per later attempt,
    capped at an hour."""
    return float(min(3600.0, step.retry_delay_s * (2 ** max(0, attempt - 1))))


class IndexHeap:
    """A set of step indexes whose smallest member is found in O(log n).

    Removal is lazy: a removed index stays in the heap until it reaches the top.
    """

    __slots__ = ("_heap", "_members")

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._members: set[int] = set()

    def add(self, index: int) -> None:
        if index not in self._members:
            self._members.add(index)
            heapq.heappush(self._heap, index)

    def discard(self, index: int) -> None:
        self._members.discard(index)

    def __contains__(self, index: int) -> bool:
        return index in self._members

    def __len__(self) -> int:
        return len(self._members)

    def first(self) -> int | None:
        heap, members = self._heap, self._members
        while heap and heap[0] not in members:
            heapq.heappop(heap)
        if len(heap) > 4 * len(members) + 64:  # keep stale entries bounded
            self._heap = heap = sorted(members)
        return heap[0] if heap else None

    def __iter__(self) -> Any:
        return iter(sorted(self._members))
