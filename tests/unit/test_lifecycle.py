"""The lifecycle tables: what each verb may do from each state, and the errors naming the rule."""

from __future__ import annotations

import pytest

from baton.domain.errors import InvalidTransition
from baton.domain.lifecycle import STEP_LIFECYCLE, TASK_LIFECYCLE, StepStatus, TaskStatus

STEP_RULES = {
    ("start", "pending"): "current",
    ("complete", "pending"): "completed",
    ("complete", "current"): "completed",
    ("fail", "pending"): "failed",
    ("fail", "current"): "failed",
    ("skip", "pending"): "skipped",
    ("skip", "current"): "skipped",
    ("skip", "failed"): "skipped",
    ("cancel", "pending"): "cancelled",
    ("cancel", "current"): "cancelled",
    ("retry", "failed"): "pending",
}
TASK_RULES = {
    ("start", "queued"): "running",
    **{(verb, s): dest for s in ("queued", "running") for verb, dest in
       (("complete", "completed"), ("fail", "error"), ("cancel", "cancelled"))},
}  # fmt: skip


@pytest.mark.parametrize("state", list(StepStatus))
@pytest.mark.parametrize("verb", ["start", "complete", "fail", "skip", "cancel", "retry"])
def test_the_step_table_allows_exactly_the_contracts_transitions(verb, state):
    expected = STEP_RULES.get((verb, state.value))
    assert STEP_LIFECYCLE.allows(verb, state) is (expected is not None)
    if expected:
        assert STEP_LIFECYCLE.check(verb, state, "step 'x'") == expected
    else:
        with pytest.raises(InvalidTransition) as caught:
            STEP_LIFECYCLE.check(verb, state, "step 'x'")
        assert caught.value.message == f"cannot {verb} step 'x': it is {state.value}"
        assert caught.value.details["rule"] == f"step.{verb}"
        assert caught.value.code == 409


@pytest.mark.parametrize("state", list(TaskStatus))
@pytest.mark.parametrize("verb", ["start", "complete", "fail", "cancel"])
def test_the_task_table_allows_exactly_the_contracts_transitions(verb, state):
    expected = TASK_RULES.get((verb, state.value))
    assert TASK_LIFECYCLE.allows(verb, state.value) is (expected is not None)
    if expected:
        assert TASK_LIFECYCLE.check(verb, state, "task 't'") == expected


def test_finished_steps_have_no_way_out_but_a_failed_one_can_be_retried_or_skipped():
    for state in ("completed", "skipped", "cancelled"):
        assert not any(STEP_LIFECYCLE.allows(v, state) for v in ("start", "retry", "complete"))
    assert STEP_LIFECYCLE.allows("retry", "failed") and STEP_LIFECYCLE.allows("skip", "failed")
