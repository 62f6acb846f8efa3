"""Shared machinery of the fault suite: Baton as a subprocess, a mixed load whose every command
carries a unique msg id and is retried until acknowledged, and the checks that nothing was lost,
duplicated or half-applied (against the store, the views and the JetStream streams).

Every task a worker drives runs one of three scripts in its own session, so the final state of
each task is fully determined by its script: applying every acknowledged command exactly once
means every task of a script ends with the same status and the same sequence of event types.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import pytest

from baton.adapters.client import BatonClient, BatonRequestError, BatonUnavailable
from baton.adapters.config import Settings, event_store_env
from baton.adapters.publication import stream_names
from baton.domain.services import BatonApp
from baton.projections import Projections
from tests.plans import seq
from tests.processes import ServiceProcess as ServiceProcess
from tests.processes import stream_messages as stream_messages
from tests.processes import wait_for_stream

#: The soak profile (``make soak``) runs the long versions.
SOAK = os.environ.get("HYPOTHESIS_PROFILE") == "soak"


def new_prefix() -> str:
    return f"f{uuid.uuid4().hex[:12]}"


def emit(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Prints a figure past pytest's capture, so it shows in ``make test``'s output."""
    with capsys.disabled():
        print(f"\n[faults] {text}", flush=True)


# -- Baton as a process ------------------------------------------------------------------------


# -- the load ----------------------------------------------------------------------------------

SEQ_PLAN = seq("a", "b", "c")
REPLAN = {
    "steps": [
        {"step_name": "b", "description": "do b"},
        {"step_name": "c2", "description": "do c2"},
        {"step_name": "d", "description": "do d"},
    ]
}
GRAPH_PLAN = {
    "steps": [
        {"step_name": "x", "description": "do x", "depends_on": []},
        {"step_name": "y", "description": "do y", "depends_on": []},
        {"step_name": "z", "description": "do z", "depends_on": ["x", "y"]},
    ]
}

#: (client method, arguments from the script's context). The context holds ``task_id`` and
#: ``step`` (the step id of the last reply that carried a step).
Script = list[tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]]


def _task(ctx: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"task_id": ctx["task_id"], **more}


def _step(ctx: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"task_id": ctx["task_id"], "step_id": ctx["step"], **more}


def script(kind: str, n: int) -> Script:
    """The commands of task ``n`` of ``kind``: creates, starts, nexts, claims, step completes,
    fails, retries, skips, replans, context and cancels."""
    session = f"{kind}-{n}"
    if kind == "seq":  # ends completed
        return [
            ("create_task", lambda c: {"task_name": f"seq {n}", "session_id": session,
                                       "plan": SEQ_PLAN}),
            ("start_task", _task),
            ("add_context", lambda c: _task(c, key="n", value=n)),
            ("claim_step", lambda c: _task(c, worker=f"w{n}")),
            ("complete_step", lambda c: _step(c, result={"n": n})),
            ("next_step", _task),
            ("replan_task", lambda c: _task(c, plan=REPLAN)),
            ("next_step", _task),
            ("skip_step", _step),
            ("next_step", _task),
            ("next_step", _task),
        ]  # fmt: skip
    if kind == "graph":  # ends cancelled
        return [
            ("create_task", lambda c: {"task_name": f"graph {n}", "session_id": session,
                                       "plan": GRAPH_PLAN, "priority": n % 3}),
            ("claim_step", lambda c: _task(c, worker="wx")),
            ("complete_step", lambda c: _step(c, result=n)),
            ("claim_step", lambda c: _task(c, worker="wy")),
            ("fail_step", lambda c: _step(c, message="flaky")),
            ("retry_step", _step),
            ("complete_step", _step),
            ("next_step", _task),
            ("cancel_task", lambda c: _task(c, reason="enough")),
        ]  # fmt: skip
    if kind == "idle":  # stays running with a due trigger, which must be published once
        return [
            ("create_task", lambda c: {"task_name": f"idle {n}", "session_id": session,
                                       "plan": SEQ_PLAN}),
            ("start_task", _task),
        ]  # fmt: skip
    raise ValueError(kind)


KINDS = ("seq", "graph", "idle")
FINAL_STATUS = {"seq": "completed", "graph": "cancelled", "idle": "running", "created": "running"}


@dataclass
class Acked:
    method: str
    args: dict[str, Any]
    reply: Any


@dataclass
class Load:
    """Workers running scripts until told to stop; every command is retried with its msg id
    until acknowledged (no responders and timeouts, and the errors in ``retry_on``)."""

    client: BatonClient
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    retry_on: tuple[int, ...] = ()
    acked: dict[str, Acked] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)  # task_id -> kind
    unavailable: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _count: int = 0

    async def send(self, method: str, args: dict[str, Any], msg_id: str) -> Any:
        while True:
            sent = time.monotonic()
            try:
                reply = await getattr(self.client, method)(**args, msg_id=msg_id)
            except (BatonUnavailable, nats.errors.Error):  # also: reconnecting to NATS
                self.unavailable += 1
                await asyncio.sleep(0.05)
                continue
            except BatonRequestError as error:
                self.errors[f"{error.code} {error.reason}"] += 1
                if error.code in self.retry_on:
                    await asyncio.sleep(0.1)
                    continue
                raise AssertionError(f"{method} {args} ({msg_id}): {error}") from error
            if time.monotonic() - sent >= self.client.timeout:
                # No reply in time, then the client sent it again (same id) and got one: this
                # request met the dead service too, though the client's retry hid it.
                self.unavailable += 1
            self.acked[msg_id] = Acked(method, args, reply)
            return reply

    async def run_script(self, kind: str, n: int) -> str:
        ctx: dict[str, Any] = {}
        for i, (method, make_args) in enumerate(script(kind, n)):
            reply = await self.send(method, make_args(ctx), f"{self.tag}-{kind}-{n}-{i}")
            if method == "create_task":
                ctx["task_id"] = reply["task_id"]
                self.tasks[reply["task_id"]] = kind
            step = reply.get("step") if "step" in reply else reply.get("step_id")
            if isinstance(step, dict):
                ctx["step"] = step["step_id"]
            elif isinstance(step, str):
                ctx["step"] = step
        return str(ctx["task_id"])

    async def worker(self, w: int) -> None:
        while not self.stop.is_set():
            self._count += 1
            n = self._count
            await self.run_script(KINDS[n % len(KINDS)], n)

    async def run(self, workers: int) -> None:
        await asyncio.gather(*(self.worker(w) for w in range(workers)))

    async def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {count} acked"
            await asyncio.sleep(0.01)


async def retrying(call: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """``call()`` again until Baton answers (after a kill or outage)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except BatonUnavailable:
            assert time.monotonic() < deadline, "Baton did not answer in time"
            await asyncio.sleep(0.1)


# -- the checks --------------------------------------------------------------------------------


def max_notification_id(settings: Settings) -> int:
    """The last notification id of the store (opened beside the running service)."""
    app = BatonApp(event_store_env(settings))
    try:
        return int(app.recorder.max_notification_id() or 0)
    finally:
        app.close()


@dataclass
class Figures:
    commands_acked: int = 0
    commands_resent: int = 0
    tasks: int = 0
    events: int = 0
    progress_messages: int = 0
    triggers_published: int = 0


async def check_everything(
    load: Load, nats_url: str, prefix: str, settings: Settings
) -> tuple[Figures, dict[str, list[dict[str, Any]]]]:
    """Every acknowledged command applied exactly once; histories consistent with the scripts;
    every event published once and in order per task; every due trigger published once.
    Needs the service running; returns the figures and each task's history."""
    client = load.client
    figures = Figures(commands_acked=len(load.acked), tasks=len(load.tasks))
    histories: dict[str, list[dict[str, Any]]] = {}
    views: dict[str, dict[str, Any]] = {}
    for task_id in load.tasks:
        views[task_id] = await client.task(task_id=task_id)
        histories[task_id] = (await client.history(task_id=task_id))["events"]

    # Versions contiguous, each script's tasks all alike: same final status, same event types.
    shapes: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for task_id, kind in load.tasks.items():
        view, events = views[task_id], histories[task_id]
        assert [e["version"] for e in events] == list(range(1, view["version"] + 1)), task_id
        assert view["status"] == FINAL_STATUS[kind], (task_id, view["status"])
        shapes[kind].add(tuple(e["type"] for e in events))
    for kind, found in shapes.items():
        assert len(found) == 1, f"{kind} tasks differ: {found}"
    figures.events = sum(len(e) for e in histories.values())

    # Re-sending every acknowledged command: the first reply again, nothing appended.
    before = await asyncio.to_thread(max_notification_id, settings)
    items = list(load.acked.items())
    for start in range(0, len(items), 50):
        chunk = items[start : start + 50]
        replies = await asyncio.gather(
            *(getattr(client, a.method)(**a.args, msg_id=mid) for mid, a in chunk)
        )
        for (mid, a), reply in zip(chunk, replies, strict=True):
            assert reply == a.reply, mid
    figures.commands_resent = len(items)
    assert await asyncio.to_thread(max_notification_id, settings) == before

    # Progress: every event of every task exactly once, in order.
    progress_stream, trigger_stream = stream_names(prefix)
    await wait_for_stream(nats_url, progress_stream, figures.events)
    progress = await stream_messages(nats_url, progress_stream)
    ids = [mid for _, mid in progress]
    assert len(ids) == len(set(ids)) == figures.events
    published: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for body, _ in progress:
        published[body["task_id"]].append((body["version"], body["type"]))
    for task_id, events in histories.items():
        assert published[task_id] == [(e["version"], e["type"]) for e in events], task_id
    figures.progress_messages = len(progress)

    # Triggers: none twice, each one scheduled by some task, and every still-pending due one out.
    scheduled = {  # alone, or in the StepStarted of the step it is for
        e["data"]["trigger"]["trigger_id"]
        for events in histories.values()
        for e in events
        if (e["data"] or {}).get("trigger")
    }
    pending = {v["trigger"]["trigger_id"] for v in views.values() if v.get("trigger")}
    deadline = time.monotonic() + 15
    while True:
        triggers = await stream_messages(nats_url, trigger_stream)
        trigger_ids = [body["trigger_id"] for body, _ in triggers]
        if pending <= set(trigger_ids) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert len(trigger_ids) == len(set(trigger_ids)), "a trigger was published twice"
    assert set(trigger_ids) <= scheduled
    assert pending <= set(trigger_ids), (
        f"due triggers never published: {pending - set(trigger_ids)}"
    )
    assert all(mid.startswith(f"{body['trigger_id']}:") for body, mid in triggers)
    figures.triggers_published = len(trigger_ids)
    return figures, histories


def check_views_equal_a_rebuild(settings: Settings) -> int:
    """With the service stopped: the views, caught up, tell what the events say, and equal a
    rebuild from zero. Returns how many tasks were compared."""
    app = BatonApp(event_store_env(settings))
    views = Projections(app)
    try:
        views.catch_up()
        incremental = views.dump()
        for row in incremental["baton_tasks"]:
            assert views.task(row["task_id"]) == app.task_view(row["task_id"]), row["task_id"]
        views.rebuild()
        assert views.dump() == incremental
        return len(incremental["baton_tasks"])
    finally:
        views.close()
        app.close()
