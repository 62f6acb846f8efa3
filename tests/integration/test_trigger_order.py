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


async def test_a_trigger_decided_before_a_newer_one_was_stored_is_refused(
    js: Any, prefix: str, nats_url: str
) -> None:
    seen_by_a, seen_by_b = Pending(), Pending()
    a = TriggerScheduler(seen_by_a, js, prefix)
    b = TriggerScheduler(seen_by_b, js, prefix)

    seen_by_a.schedule("t0")
    assert await a.pump_once() == 1  # A knows the session's subject now

    # Instance B has seen t0 replaced by t1, then t1 by t2, and publishes t2; A, slow, still
    # holds t1 as due and publishes it afterwards.
    seen_by_b.schedule("t2")
    assert await b.pump_once() == 1
    seen_by_a.schedule("t1")
    assert await a.pump_once() == 0
    assert a.stale == 1
    assert seen_by_a.marked == ["t0"]  # t1 not marked: the next look decides again
    assert await published_ids(nats_url, prefix) == ["t0", "t2"]

    # The next look: by then A's projections know t1 was replaced by t2 (already out).
    seen_by_a.due.clear()
    seen_by_a.schedule("t2")
    assert await a.pump_once() == 1
    assert a.duplicates == 1
    assert await published_ids(nats_url, prefix) == ["t0", "t2"]


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
    assert await restarted.pump_once() == 1
    assert restarted.duplicates == 1
    pending.schedule("t1", session="s1")
    assert await restarted.pump_once() == 1
    assert sorted(await published_ids(nats_url, prefix)) == ["t0", "t1", "u0"]
