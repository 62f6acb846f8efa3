"""Requests are checked before anything happens: free-form JSON is bounded in depth and finite."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from baton.adapters.messages import COMMANDS, parse
from baton.domain import commands as c
from baton.domain.errors import InvalidRequest
from baton.domain.limits import MAX_JSON_DEPTH


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (c.CompleteStep, '{"task_id": "t", "step_id": "s", "result": NaN}'),
        (c.CompleteStep, '{"task_id": "t", "step_id": "s", "result": {"a": [Infinity]}}'),
        (c.AddContext, '{"task_id": "t", "key": "k", "value": -Infinity}'),
        (c.StartTask, '{"task_id": "t", "delay_s": NaN}'),
        (
            c.CreateTask,
            '{"task_name": "t", "plan": {"steps": [{"step_name": "a"}], "context": {"x": NaN}}}',
        ),
    ],
)
def test_a_nan_or_an_infinity_anywhere_is_rejected(model: type[c.Request], body: str) -> None:
    with pytest.raises(ValidationError, match="finite"):
        model.model_validate_json(body)


def test_json_nested_deeper_than_the_limit_is_rejected_and_at_the_limit_accepted() -> None:
    ok = f'{{"task_id": "t", "step_id": "s", "result": {nested(MAX_JSON_DEPTH)}}}'
    assert c.CompleteStep.model_validate_json(ok).result is not None
    too_deep = f'{{"task_id": "t", "step_id": "s", "result": {nested(MAX_JSON_DEPTH + 1)}}}'
    with pytest.raises(ValidationError, match="nested deeper"):
        c.CompleteStep.model_validate_json(too_deep)


# -- a key named twice ------------------------------------------------------------------------
# Parsers disagree on which of two same-named keys wins, so a request that names one twice is
# refused (400), however it is spelled: compact as Baton's client writes it, or spaced out.

_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


def _with_key_twice(obj: dict[str, Any], key: str) -> bytes:
    """``obj`` written compactly, with ``key`` written once more at the end (same value)."""
    written = orjson.dumps(obj)
    return written[:-1] + b"," + orjson.dumps(key) + b":" + orjson.dumps(obj[key]) + b"}"


def _spaced_with_key_twice(obj: dict[str, Any], key: str) -> bytes:
    """The same, spaced out as ``json.dumps(..., indent=1)`` writes."""
    written = json.dumps(obj, indent=1).rstrip()[:-1]
    return f"{written}, {json.dumps(key)}: {json.dumps(obj[key])}}}".encode()


def _complete(result: bytes) -> bytes:
    return b'{"task_id":"t","step_id":"s","result":' + result + b"}"


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=4), _json, min_size=1, max_size=4), st.data())
def test_a_key_named_twice_anywhere_is_refused_and_a_request_without_is_accepted(
    obj: dict[str, Any], data: st.DataObject
) -> None:
    model = COMMANDS["step.complete"]
    for spelled in (orjson.dumps(obj), json.dumps(obj, indent=1).encode()):
        assert parse(model, _complete(spelled)).result == obj  # type: ignore[attr-defined]
    key = data.draw(st.sampled_from(sorted(obj)))
    twice = _with_key_twice(obj, key)
    for body in (
        _complete(twice),  # in a nested object
        _complete(b"[" + twice + b"]"),  # in an array
        _complete(_spaced_with_key_twice(obj, key)),
    ):
        with pytest.raises(InvalidRequest, match="twice"):
            parse(model, body)
    top = b'{"task_id":"t","step_id":"s","task_id":"t"}'
    with pytest.raises(InvalidRequest, match="'task_id' twice"):
        parse(model, top)
