"""Requests are checked before anything happens: free-form JSON is bounded in depth and finite."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from baton.domain import commands as c
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
