"""The lifecycles of steps and tasks as data: a states Enum and one transition table each.

The tables are the single source of what may happen. A ``transitions`` Machine (one per
process, with no model bound) validates a verb against a state through a throwaway probe, so
aggregates never carry machine attributes and a state only changes through a recorded event.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Final

from transitions import Machine, MachineError

from baton.domain.errors import InvalidTransition


class StepStatus(StrEnum):
    PENDING = "pending"
    CURRENT = "current"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


S = StepStatus
T = TaskStatus

#: verb, from, to. ``complete`` from ``pending`` also needs the step to be ready.
STEP_TRANSITIONS: Final[list[dict[str, object]]] = [
    {"trigger": "start", "source": [S.PENDING], "dest": S.CURRENT},
    {"trigger": "complete", "source": [S.PENDING, S.CURRENT], "dest": S.COMPLETED},
    {"trigger": "fail", "source": [S.PENDING, S.CURRENT], "dest": S.FAILED},
    {"trigger": "skip", "source": [S.PENDING, S.CURRENT, S.FAILED], "dest": S.SKIPPED},
    {"trigger": "cancel", "source": [S.PENDING, S.CURRENT], "dest": S.CANCELLED},
    {"trigger": "retry", "source": [S.FAILED], "dest": S.PENDING},
]

TASK_TRANSITIONS: Final[list[dict[str, object]]] = [
    {"trigger": "start", "source": [T.QUEUED], "dest": T.RUNNING},
    {"trigger": "complete", "source": [T.QUEUED, T.RUNNING], "dest": T.COMPLETED},
    {"trigger": "fail", "source": [T.QUEUED, T.RUNNING], "dest": T.ERROR},
    {"trigger": "cancel", "source": [T.QUEUED, T.RUNNING], "dest": T.CANCELLED},
]

#: A step in one of these states is history: it never changes again except by retry.
STEP_FINISHED: Final = frozenset({S.COMPLETED, S.SKIPPED, S.CANCELLED})
#: A dependency in one of these states no longer blocks its dependents.
STEP_SATISFIED: Final = frozenset({S.COMPLETED, S.SKIPPED})
#: Kept as history by a replan (never matched or cancelled by it).
STEP_HISTORY: Final = frozenset({S.COMPLETED, S.SKIPPED, S.CANCELLED, S.FAILED})
TASK_ENDED: Final = frozenset({T.COMPLETED, T.ERROR, T.CANCELLED})


class _Probe:
    """A throwaway model: bound to the machine for one check, then dropped."""

    state: str


class Lifecycle:
    """One transition table, with a machine that answers what a verb does from a state."""

    def __init__(self, kind: str, states: type[Enum], table: list[dict[str, object]]) -> None:
        self.kind = kind
        self.states = states
        self.table = table
        self._machine = Machine(
            model=None,
            states=[s.value for s in states],
            transitions=[
                {
                    "trigger": t["trigger"],
                    "source": [s.value for s in t["source"]],  # type: ignore[attr-defined]
                    "dest": t["dest"].value,  # type: ignore[attr-defined]
                }
                for t in table
            ],
            auto_transitions=False,
            initial=None,
        )
        # The verbs' outcomes, precomputed from the machine once: (verb, state) -> state.
        self._outcomes: dict[tuple[str, str], str] = {}
        for verb in {str(t["trigger"]) for t in table}:
            for state in states:
                probe = _Probe()
                self._machine.add_model(probe, initial=state.value)
                try:
                    if getattr(probe, verb)():
                        self._outcomes[(verb, state.value)] = probe.state
                except MachineError:
                    pass
                finally:
                    self._machine.remove_model(probe)

    def allows(self, verb: str, state: Enum | str) -> bool:
        value = state.value if isinstance(state, Enum) else state
        return (verb, value) in self._outcomes

    def check(self, verb: str, state: Enum | str, what: str) -> str:
        """Returns the state ``verb`` leads to, or raises InvalidTransition naming the rule."""
        value = state.value if isinstance(state, Enum) else state
        try:
            return self._outcomes[(verb, value)]
        except KeyError:
            allowed = sorted(s for (v, s) in self._outcomes if v == verb)
            raise InvalidTransition(
                f"cannot {verb} {what}: it is {value}",
                details={"rule": f"{self.kind}.{verb}", "from": allowed, "state": value},
            ) from None


STEP_LIFECYCLE: Final = Lifecycle("step", StepStatus, STEP_TRANSITIONS)
TASK_LIFECYCLE: Final = Lifecycle("task", TaskStatus, TASK_TRANSITIONS)
