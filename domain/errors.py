"""Domain errors. Each carries the contract's code and reason, so adapters map them 1:1."""

from __future__ import annotations

from typing import Any


class BatonError(Exception):
    """Base class of every error that reaches a user as a contract error."""

    code: int = 500
    reason: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "reason": self.reason, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class InvalidRequest(BatonError):
    """The request is malformed or breaks a rule of the contract (400)."""

    code = 400
    reason = "invalid_request"


class InvalidPlan(InvalidRequest):
    """The plan is empty, has duplicates, dangling dependencies or cycles (400)."""

    reason = "invalid_plan"


class NotFound(BatonError):
    """An unknown task or step (404)."""

    code = 404
    reason = "not_found"


class InvalidTransition(BatonError):
    """The lifecycle table does not allow the command in the current state (409)."""

    code = 409
    reason = "invalid_transition"


class ConcurrentChange(BatonError):
    """Another writer kept changing the same aggregate; the command was not applied (409)."""

    code = 409
    reason = "concurrent_change"


class TooLarge(BatonError):
    """The request exceeds a size limit (413)."""

    code = 413
    reason = "too_large"


class PlannerUnavailable(BatonError):
    """No planner answered in time (503)."""

    code = 503
    reason = "planner_unavailable"


class StoreUnavailable(BatonError):
    """The event store cannot be reached; nothing was stored (503)."""

    code = 503
    reason = "store_unavailable"


class StaleClaim(InvalidTransition):
    """A command carried a claim id that no longer holds its step (409)."""

    reason = "stale_claim"


class CommandIdReused(BatonError):
    """A command id already used for a command on another subject (409)."""

    code = 409
    reason = "command_id_reused"
