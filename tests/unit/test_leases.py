"""Claims that can die: leases, heartbeats, fencing by claim id, retry policies, claim_next."""

from __future__ import annotations

import pytest

from baton.domain import commands as c
from baton.domain.errors import StaleClaim
from tests.plans import graph, seq
from tests.unit.support import create, sid, step


def claim(app, task_id, **fields):
    return app.handle(c.ClaimStep(task_id=task_id, worker="w", **fields))["step"]


def expire(app, held):
    return app.handle(
        c.ExpireClaim(task_id=held["task_id"], step_id=held["step_id"], claim_id=held["claim_id"])
    )["expired"]


def test_a_claim_carries_a_new_claim_id_and_its_lease(app, clock):
    view = create(app, graph(a=[], b=[]))
    first = claim(app, view["task_id"], lease_s=30)
    second = claim(app, view["task_id"])
    assert first["claim_id"] != second["claim_id"]
    assert first["lease_expires_at"] == clock.now + 30
    assert second["lease_expires_at"] == clock.now + app.default_lease_s


def test_a_lapsed_claim_is_handed_out_again_with_a_new_claim_id(app, clock):
    view = create(app, graph(a=[]))
    held = claim(app, view["task_id"], lease_s=1)
    assert not expire(app, held)  # not lapsed yet: nothing appended
    clock.now += 2
    assert expire(app, held)
    assert not expire(app, held)  # exactly once
    again = claim(app, view["task_id"])
    assert again["step_id"] == held["step_id"] and again["claim_id"] != held["claim_id"]
    history = [e["type"] for e in app.history(view["task_id"])]
    assert history.count("ClaimExpired") == 1


def test_a_stale_claim_can_neither_complete_nor_heartbeat_and_changes_nothing(app, clock, rejected):
    view = create(app, graph(a=[]))
    held = claim(app, view["task_id"], lease_s=1)
    clock.now += 2
    expire(app, held)
    successor = claim(app, view["task_id"])
    ids = {"task_id": held["task_id"], "step_id": held["step_id"], "claim_id": held["claim_id"]}
    for command in (
        c.CompleteStep(**ids, result="late"),
        c.FailStep(**ids),
        c.SkipStep(**ids),
        c.HeartbeatStep(**ids),
    ):
        with rejected(StaleClaim, 409):
            app.handle(command)
    done = app.handle(
        c.CompleteStep(
            task_id=held["task_id"], step_id=held["step_id"], claim_id=successor["claim_id"]
        )
    )
    assert done["status"] == "completed"


def test_heartbeats_keep_a_lease_held(app, clock):
    view = create(app, graph(a=[]))
    held = claim(app, view["task_id"], lease_s=1)
    for _ in range(5):
        clock.now += 0.4
        app.handle(
            c.HeartbeatStep(
                task_id=held["task_id"], step_id=held["step_id"], claim_id=held["claim_id"],
                lease_s=1,
            )
        )  # fmt: skip
        assert not expire(app, held)
    assert app.task_view(view["task_id"])["steps"][0]["claim_id"] == held["claim_id"]


def test_without_a_claim_id_step_commands_act_as_an_operator(app):
    view = create(app, graph(a=[]))
    claim(app, view["task_id"])
    done = app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    assert done["status"] == "completed"


def test_a_step_with_three_attempts_is_handed_out_three_times_then_stays_failed(app, clock):
    plan = {"steps": [{"step_name": "a", "depends_on": [], "max_attempts": 3, "retry_delay_s": 2}]}
    view = create(app, plan)
    outcomes = []
    for _ in range(3):
        held = claim(app, view["task_id"])
        assert held is not None
        reply = app.handle(
            c.FailStep(task_id=view["task_id"], step_id=held["step_id"], message="boom")
        )
        outcomes.append(reply["status"])
        if reply["status"] == "pending":
            assert claim(app, view["task_id"]) is None  # waiting out its delay
            clock.now = reply["retry_at"]
    assert outcomes == ["pending", "pending", "failed"]
    delays = [e["data"]["retry_at"] for e in app.history(view["task_id"])
              if e["type"] == "StepAttemptFailed"]  # fmt: skip
    assert len(delays) == 2


def test_retry_delays_double_per_attempt(app, clock):
    plan = {"steps": [{"step_name": "a", "depends_on": [], "max_attempts": 4, "retry_delay_s": 3}]}
    view = create(app, plan)
    waits = []
    for _ in range(3):
        held = claim(app, view["task_id"])
        start = clock.now
        reply = app.handle(c.FailStep(task_id=view["task_id"], step_id=held["step_id"]))
        if reply["status"] == "pending":
            waits.append(reply["retry_at"] - start)
            clock.now = reply["retry_at"]
    assert waits == [3, 6, 12]


def test_a_lapse_counts_as_an_attempt_of_a_retry_policy(app, clock):
    plan = {"steps": [{"step_name": "a", "depends_on": [], "max_attempts": 2, "retry_delay_s": 0}]}
    view = create(app, plan)
    for expected in ("pending", "failed"):
        held = claim(app, view["task_id"], lease_s=1)
        clock.now += 2
        assert expire(app, held)
        assert app.task_view(view["task_id"])["steps"][0]["status"] == expected


def test_a_lapsed_current_step_of_a_sequential_plan_stays_current_unclaimed(app, clock):
    view = create(app, seq("a", "b"))
    held = claim(app, view["task_id"], lease_s=1)
    clock.now += 2
    assert expire(app, held)
    a = step(app.task_view(view["task_id"]), "a")
    assert a["status"] == "current" and "claimed_by" not in a
    assert claim(app, view["task_id"])["step_name"] == "a"


def test_complete_with_claim_next_claims_in_the_same_reply(app):
    view = create(app, seq("a", "b", "c"))
    held = claim(app, view["task_id"])
    reply = app.handle(
        c.CompleteStep(
            task_id=view["task_id"], step_id=held["step_id"], claim_id=held["claim_id"],
            claim_next=True, worker="w2",
        )
    )  # fmt: skip
    assert reply["status"] == "completed"
    assert reply["next"]["queue_status"] == "in_progress"
    assert reply["next"]["step"]["step_name"] == "b"
    assert reply["next"]["step"]["claimed_by"] == "w2"
    b = reply["next"]["step"]
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=b["step_id"]))
    c_ = claim(app, view["task_id"])
    end = app.handle(
        c.CompleteStep(task_id=view["task_id"], step_id=c_["step_id"], claim_next=True)
    )
    assert end["task_status"] == "completed"
    assert end["next"] == {"step": None, "queue_status": "done"}


@pytest.mark.parametrize("lease", [0, -1, 86_401, float("inf")])
def test_a_lease_outside_its_bounds_is_refused(lease):
    with pytest.raises(ValueError):
        c.ClaimStep(task_id="t", lease_s=lease)


def test_a_lapse_counts_as_an_attempt_in_a_sequential_plan_too(app, clock):
    plan = {
        "steps": [{"step_name": "a", "max_attempts": 2, "retry_delay_s": 0}, {"step_name": "b"}]
    }
    view = create(app, plan)
    for expected in ("pending", "failed"):
        held = claim(app, view["task_id"], lease_s=1)
        assert held["step_name"] == "a"
        clock.now += 2
        assert expire(app, held)
        assert step(app.task_view(view["task_id"]), "a")["status"] == expected
