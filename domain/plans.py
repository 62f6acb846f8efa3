"""Plans: what a user or planner proposes, checked and normalised before any event exists.

A plan in which no step has a ``depends_on`` key is sequential (each step depends on the one
listed before it); a ``depends_on`` key anywhere, even ``[]``, makes it a dependency graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from baton.domain.errors import InvalidPlan
from baton.domain.limits import MAX_ATTEMPTS, MAX_NAME, MAX_STEPS, MAX_TEXT, check_json_depth


class PlanStep(BaseModel):
    """One step as a plan proposes it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, strict=True)

    step_name: str = Field(min_length=1, max_length=MAX_NAME)
    description: str = Field(default="", max_length=MAX_TEXT)
    action_instruction: str | None = Field(default=None, max_length=MAX_TEXT)
    validation_instruction: str | None = Field(default=None, max_length=MAX_TEXT)
    depends_on: list[str] | None = Field(default=None, max_length=MAX_STEPS)
    #: Attempts allowed in all (1: no automatic retry), and the delay before the second one
    #: (doubled for each later attempt, capped at an hour).
    max_attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    retry_delay_s: float = Field(default=1.0, ge=0, le=3600, allow_inf_nan=False)

    @field_validator("step_name")
    @classmethod
    def _name_is_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("step_name must not be blank")
        return value


class Plan(BaseModel):
    """``{goal?, inputs_params?, context?, steps: [...]}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    goal: str | None = Field(default=None, max_length=MAX_TEXT)
    inputs_params: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    steps: list[PlanStep] = Field(max_length=MAX_STEPS)

    @field_validator("inputs_params", "context")
    @classmethod
    def _shallow_enough(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        check_json_depth(value)
        return value


@dataclass(frozen=True)
class StepSpec:
    """A step of a checked plan, its dependencies resolved."""

    step_name: str
    description: str
    action_instruction: str | None
    validation_instruction: str | None
    depends_on: tuple[str, ...] = field(default_factory=tuple)
    max_attempts: int = 1
    retry_delay_s: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "step_name": self.step_name,
            "description": self.description,
            "action_instruction": self.action_instruction,
            "validation_instruction": self.validation_instruction,
            "depends_on": list(self.depends_on),
            "max_attempts": self.max_attempts,
            "retry_delay_s": self.retry_delay_s,
        }


def is_sequential(plan: Plan) -> bool:
    return not any("depends_on" in s.model_fields_set for s in plan.steps)


def resolve(plan: Plan, history: Iterable[str] = ()) -> list[StepSpec]:
    """Checks a plan and resolves its dependencies.

    ``history`` names steps that already exist as history (a replan): ``depends_on`` may name
    them, and a plan step named like one is dropped (it stays as it was).
    Raises InvalidPlan on an empty plan, duplicate names, dangling names, self-dependencies and
    cycles.
    """
    if not plan.steps:
        raise InvalidPlan("the plan has no steps")
    names = [s.step_name for s in plan.steps]
    seen: set[str] = set()
    duplicates = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if duplicates:
        raise InvalidPlan(
            f"step names must be unique: {', '.join(map(repr, duplicates))} repeated",
            details={"duplicates": duplicates},
        )
    known_history = set(history)
    sequential = is_sequential(plan)
    specs: list[StepSpec] = []
    for i, step in enumerate(plan.steps):
        if sequential:
            # Each step waits for the one before it; a history step listed in between (kept
            # as it is) does not break the chain: the step also waits for the step before it.
            chain: list[str] = []
            j = i - 1
            while j >= 0 and names[j] in known_history:
                chain.append(names[j])
                j -= 1
            if j >= 0:
                chain.append(names[j])
            deps: tuple[str, ...] = tuple(reversed(chain))
        else:
            deps = tuple(dict.fromkeys(step.depends_on or ()))
        specs.append(
            StepSpec(
                step_name=step.step_name,
                description=step.description,
                action_instruction=step.action_instruction,
                validation_instruction=step.validation_instruction,
                depends_on=deps,
                max_attempts=step.max_attempts,
                retry_delay_s=float(step.retry_delay_s),
            )
        )
    defined = set(names) | known_history
    for spec in specs:
        if spec.step_name in spec.depends_on:
            raise InvalidPlan(
                f"step {spec.step_name!r} depends on itself", details={"cycle": [spec.step_name]}
            )
        dangling = [d for d in spec.depends_on if d not in defined]
        if dangling:
            raise InvalidPlan(
                f"step {spec.step_name!r} depends on unknown step"
                f"{'s' if len(dangling) > 1 else ''} {', '.join(map(repr, dangling))}",
                details={"step_name": spec.step_name, "unknown": dangling},
            )
    cycle = find_cycle(
        {s.step_name: s.depends_on for s in specs if s.step_name not in known_history}
    )
    if cycle:
        raise InvalidPlan(
            f"the plan has a dependency cycle: {' -> '.join(cycle)}", details={"cycle": cycle}
        )
    return [s for s in specs if s.step_name not in known_history]


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Returns one cycle of ``graph`` (node -> dependencies) as a closed path, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        path: list[str] = []
        stack: list[tuple[str, Any]] = [(root, iter(graph[root]))]
        colour[root] = grey
        path.append(root)
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                if dep not in graph:
                    continue
                if colour[dep] == grey:
                    return [*path[path.index(dep) :], dep]
                if colour[dep] == white:
                    colour[dep] = grey
                    path.append(dep)
                    stack.append((dep, iter(graph[dep])))
                    break
            else:
                colour[node] = black
                path.pop()
                stack.pop()
    return None
