"""The planner client: asks ``<prefix>.planner.plan`` / ``.replan`` over NATS for a plan.

No responder or no answer in time is a 503 (PlannerUnavailable); an answer that is not a usable
plan is a 400 (InvalidPlan). Either way the caller has not changed anything yet.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from baton.adapters.messages import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    PLANNER_PLAN,
    PLANNER_REPLAN,
    encode,
    summarise,
)
from baton.domain.errors import InvalidPlan, PlannerUnavailable
from baton.domain.lifecycle import STEP_HISTORY
from baton.domain.plans import Plan, resolve

log = logging.getLogger(__name__)

_HISTORY = frozenset(s.value for s in STEP_HISTORY)


class NatsPlanner:
    """Asks a planner service for plans; ``timeout_s`` bounds each request."""

    def __init__(self, nc: Client, prefix: str = "baton", timeout_s: float = 60.0) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout_s = timeout_s

    async def plan(self, task_name: str, task_instruction: str) -> Plan:
        """A checked plan for a new task."""
        payload = {"task_name": task_name, "task_instruction": task_instruction}
        plan = await self._ask(PLANNER_PLAN, payload)
        _check(plan)
        return plan

    async def replan(self, task: dict[str, Any], advance_next: bool) -> Plan:
        """A checked revised plan for ``task`` (its view); finished steps count as history."""
        plan = await self._ask(PLANNER_REPLAN, {"task": task, "advance_next": advance_next})
        history = [s["step_name"] for s in task.get("steps", ()) if s.get("status") in _HISTORY]
        _check(plan, history)
        return plan

    async def _ask(self, verb: str, payload: dict[str, Any]) -> Plan:
        subject = f"{self.prefix}.{verb}"
        try:
            msg = await self.nc.request(subject, encode(payload), timeout=self.timeout_s)
        except NoRespondersError:
            raise PlannerUnavailable(
                f"no planner answers on {subject}; send a plan with the request"
            ) from None
        except NatsTimeoutError:
            raise PlannerUnavailable(
                f"the planner on {subject} did not answer within {self.timeout_s:g} s",
                details={"timeout_s": self.timeout_s},
            ) from None
        headers = msg.headers or {}
        if ERROR_CODE_HEADER in headers:
            raise PlannerUnavailable(
                f"the planner on {subject} failed: "
                f"{headers.get(ERROR_HEADER, '')} ({headers[ERROR_CODE_HEADER]})",
                details={"planner_code": headers[ERROR_CODE_HEADER]},
            )
        return parse_plan(msg.data, subject)


def parse_plan(data: bytes, subject: str = "the planner") -> Plan:
    """A planner's answer as a Plan: a plan object, or ``{"plan": {...}}``."""
    try:
        answer = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidPlan(f"the answer of {subject} is not JSON") from None
    if isinstance(answer, dict) and "plan" in answer and "steps" not in answer:
        answer = answer["plan"]
    try:
        return Plan.model_validate(answer)
    except ValidationError as error:
        raise InvalidPlan(
            f"the answer of {subject} is not a valid plan", details={"errors": summarise(error)}
        ) from None


def _check(plan: Plan, history: Iterable[str] = ()) -> None:
    try:
        resolve(plan, history=history)
    except InvalidPlan as error:
        raise InvalidPlan(
            f"the planner's plan is invalid: {error.message}", details=error.details
        ) from None
