"""The wire format of Baton's NATS service: request parsing, reply encoding and error replies.

Shared by the service (which answers) and the client (which asks). The subjects themselves are
declared once, in ``baton.adapters.contract``; ``COMMANDS`` and ``QUERIES`` are views of it.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from baton.adapters import contract
from baton.domain import codec
from baton.domain.errors import BatonError, InvalidRequest, TooLarge
from baton.domain.limits import MAX_REQUEST_BYTES

M = TypeVar("M", bound=BaseModel)

MSG_ID_HEADER: Final = "Nats-Msg-Id"
ERROR_HEADER: Final = "Nats-Service-Error"
ERROR_CODE_HEADER: Final = "Nats-Service-Error-Code"

#: Request model of each command subject (after the prefix), from the contract table.
COMMANDS: Final[dict[str, type[BaseModel]]] = {s.name: s.request for s in contract.commands()}

#: Request model of each query subject (after the prefix), from the contract table.
QUERIES: Final[dict[str, type[BaseModel]]] = {s.name: s.request for s in contract.queries()}

PLANNER_PLAN: Final = contract.PLANNER_PLAN.name
PLANNER_REPLAN: Final = contract.PLANNER_REPLAN.name


def endpoint_name(subject: str) -> str:
    """The micro endpoint name of a subject: ``task.create`` -> ``task-create``."""
    return contract.BY_NAME[subject].endpoint


def encode(value: Any) -> bytes:
    """Compact JSON, as every reply is sent."""
    return codec.dumps_bytes(value)


#: Pydantic error types that mean "a field is bigger than its limit": answered with 413.
_TOO_LONG = frozenset({"string_too_long", "too_long", "bytes_too_long"})


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


def summarise(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors, without the offending input (which may be large), as JSON."""
    return [
        {"loc": _location(e["loc"]), "type": e["type"], "msg": e["msg"]}
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]


#: Pydantic's prefixes that repeat what the message around them already says.
_PREFIXES = ("Invalid JSON: ", "Value error, ", "Assertion failed, ")


def _bare(msg: str) -> str:
    """Pydantic's message without its prefix: ``not valid JSON: expected value ...`` rather than
    ``not valid JSON: Invalid JSON: expected value ...``."""
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def parse(model: type[M], body: bytes) -> M:
    """Validates a request body: 413 above the size limit (before parsing), else 400 on
    anything pydantic rejects (not JSON, not an object, unknown fields, wrong types)."""
    if len(body) > MAX_REQUEST_BYTES:
        raise TooLarge(
            f"the request is {len(body)} bytes; the limit is {MAX_REQUEST_BYTES}",
            details={"size": len(body), "limit": MAX_REQUEST_BYTES},
        )
    if not body.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    _refuse_duplicate_keys(body)
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = summarise(error)
        # An id too long is malformed, not a big payload: 400 (the contract's rule for ids).
        oversized = [p for p in problems if p["type"] in _TOO_LONG and p["loc"] != "command_id"]
        if oversized:
            shown = "; ".join(f"{p['loc']}: {p['msg']}" for p in oversized[:3])
            raise TooLarge(f"too large: {shown}", details={"errors": oversized}) from None
        first = problems[0]
        if first["type"] == "json_invalid":
            message = f"the request is not valid JSON: {_bare(first['msg'])}"
        else:
            shown = "; ".join(f"{p['loc']}: {_bare(p['msg'])}" for p in problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            message = f"invalid request: {shown}{more}"
        raise InvalidRequest(message, details={"errors": problems}) from None


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def _refuse_duplicate_keys(body: bytes) -> None:
    """400 for an object that names a key twice (JSON parsers disagree on which one wins, so a
    proxy and Baton could read two different requests)."""
    if body.count(b'"') < 4:  # fewer than two keys: nothing to repeat
        return
    try:
        # Written as orjson writes it (Baton's client does): the same bytes once parsed and
        # written again means every pair survived the parse, so none repeats. A tenth of the
        # hook's cost; any other spelling takes the hook.
        if orjson.dumps(orjson.loads(body)) == body:
            return
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as error:
        raise InvalidRequest(
            f"the request names the key {str(error)!r} twice", details={"key": str(error)}
        ) from None
    except (ValueError, RecursionError):
        return  # not JSON, or nested past Python's stack: pydantic says so next


def error_body(error: BatonError) -> bytes:
    """``{"error": {code, reason, message, details?}}``."""
    return encode({"error": error.to_dict()})


def error_headers(error: BatonError) -> dict[str, str]:
    """The micro error headers; the text is one line (a header value cannot hold newlines)."""
    text = " ".join(error.message.split())
    return {ERROR_HEADER: text, ERROR_CODE_HEADER: str(error.code)}
