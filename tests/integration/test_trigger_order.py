"""Triggers of a session reach their stream in the order they were scheduled, even when two
schedulers (two instances) publish and one of them is late: the stream refuses a trigger whose
session subject moved on after the scheduler decided to publish it.

The schedulers here read a hand-held list of due triggers (what the projections would say), and
publish on the session's real nats-server.
"""

from __future__ import annotations

from typing import Any

from baton.adapters.publication import TriggerScheduler, stream_names
from tests.processes import stream_messages


class Pending:
    """Due triggers as the projections would list them (one pending trigger per session)."""

    def __init__(self) -> None:
        self.due: dict[str, dict[str, Any]] = {}
        self.marked: list[str] = []

    def schedule(self, trigger_id: str, session: str = "s1") -> dict[str, Any]:
        """A newer trigger of the session replaces (withdraws) its pending one."""
        trigger = {
            "trigger_id": trigger_id,
            "task_id": "task-1",
            "step_id": "task-1.0",
            "session_id": session,
            "fire_at": 0.0,
            "priority": 5,
            "next_action_description": "act",
            "payload": {"parent_action_id": trigger_id},
        }
        self.due[session] = trigger
        return trigger

    def due_triggers(self, now: float, limit: int) -> list[dict[str, Any]]:
        return list(self.due.values())[:limit]

    def next_fire_at(self) -> float | None:
        return 0.0 if self.due else None

    def mark_trigger_published(self, trigger_id: str) -> None:
        self.marked.append(trigger_id)
        self.due = {k: v for k, v in self.due.items() if v["trigger_id"] != trigger_id}

    def catch_up(self) -> int:
        return 0


async def published_ids(nats_url: str, prefix: str) -> list[str]:
    return [
        body["trigger_id"] for body, _ in await stream_messages(nats_url, stream_names(prefix)[1])
    ]


class LateLook:
    """One scheduler's look at the shared projections that is taken now and acted on later
    (a slow instance); its later looks see the truth of their time."""

    def __init__(self, truth: Pending) -> None:
        self.truth = truth
        self.held: list[dict[str, Any]] | None = None

    def hold(self) -> None:
        self.held = self.truth.due_triggers(0.0, 100)

    def due_triggers(self, now: float, limit: int) -> list[dict[str, Any]]:
        held, self.held = self.held, None
        return held if held is not None else self.truth.due_triggers(now, limit)

    def next_fire_at(self) -> float | None:
        return self.truth.next_fire_at()

    def mark_trigger_published(self, trigger_id: str) -> None:
        self.truth.mark_trigger_published(trigger_id)

    def catch_up(self) -> int:
        return 0


async def test_a_trigger_decided_before_a_newer_one_was_stored_is_refused(
    js: Any, prefix: str, nats_url: str
) -> None:
    truth = Pending()  # the projections both instances share
    slow = LateLook(truth)
    a = TriggerScheduler(slow, js, prefix)
    b = TriggerScheduler(truth, js, prefix)

    truth.schedule("t0")
    assert await a.pump_once() == 1  # A knows the session's subject now

    truth.schedule("t1")
    slow.hold()  # A finds t1 due, and is slow to publish it
    truth.schedule("t2")  # meanwhile t1 is replaced by t2, which B publishes
    # (B took the session for a new one: the stream refused and said its sequence, B looked
    # again, t2 was still due, and went out on that sequence.)
    assert await b.pump_once() == 1
    assert b.stale == 1

    assert await a.pump_once() == 0  # t1, late: refused; A's fresh look finds it replaced
    assert a.stale == 1
    assert truth.marked == ["t0", "t2"]
    assert await published_ids(nats_url, prefix) == ["t0", "t2"]
    assert await a.pump_once() == 0


async def test_a_first_trigger_of_a_session_and_a_republished_one_go_out_once(
    js: Any, prefix: str, nats_url: str
) -> None:
    pending = Pending()
    scheduler = TriggerScheduler(pending, js, prefix)
    pending.schedule("t0", session="s1")
    pending.schedule("u0", session="s2")
    assert await scheduler.pump_once() == 2
    restarted = TriggerScheduler(pending, js, prefix)  # knows no sequence yet
    pending.schedule("t0", session="s1")  # published before a crash, not marked
    assert await restarted.pump_once() == 1  # refused once, then a duplicate
    assert (restarted.stale, restarted.duplicates) == (1, 1)
    pending.schedule("t1", session="s1")
    assert await restarted.pump_once() == 1
    assert sorted(await published_ids(nats_url, prefix)) == ["t0", "t1", "u0"]
