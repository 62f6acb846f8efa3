"""Workers: a claim loop that runs a handler per step, and a consumer of a session's triggers.

    async def handle(step):  # the claimed step's view, with its context
        return {"rows": 1200}  # the step's result

    async with await BatonClient.connect(url) as baton:
        await work(baton, handle, session_id="s1", concurrency=4, lease_s=30)

``work`` claims with a lease and heartbeats every third of it while the handler runs. A handler
that returns completes its step with the result and, in the same request, claims the next one
(``claim_next``); a handler that raises fails its step with the exception's message (the step's
retry policy decides whether it is handed out again). Every call carries the claim's id, so a
worker whose lease lapsed meanwhile changes nothing: Baton answers 409 ``stale_claim`` and the
worker drops the step, which someone else holds now. When the heartbeat learns that, the
handler is cancelled at once.

Stopping: set ``stop`` and each handler in flight finishes and its step is completed or failed,
then ``work`` returns; cancel ``work`` and the handlers are cancelled and their claims are left
to lapse (they are handed out again after their lease). Either way no claim stays held.

``consume_triggers`` reads ``<prefix>.trigger.<session_id>`` from the trigger stream with a
durable consumer: each trigger is acknowledged once handled, so one received by a consumer that
dies is delivered again; a trigger whose step is no longer current (completed, failed, made
current again since, or its task ended) is skipped, acknowledged and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from baton.adapters.client import BatonClient, BatonRequestError, BatonUnavailable
from baton.adapters.contract import trigger_subject
from baton.adapters.publication.streams import stream_names

log = logging.getLogger(__name__)

#: A step handler: gets the claimed step's view, returns its result (any JSON value).
StepHandler = Callable[[dict[str, Any]], Awaitable[Any]]

#: A trigger handler: gets the trigger and its step's current view.
TriggerHandler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]

#: How much of an exception's text a failed step keeps (the contract allows 64 KiB).
MAX_MESSAGE = 4000

#: The longest wait between two attempts to reach a Baton that does not answer.
MAX_BACKOFF_S = 1.0


def default_worker_name() -> str:
    """``<host>-<pid>``: who claims, as the step's ``claimed_by`` shows it."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _message(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= MAX_MESSAGE else "..." + text[-MAX_MESSAGE:]


def _stale(error: BatonRequestError) -> bool:
    return error.code == 409 and error.reason == "stale_claim"


@dataclass
class WorkReport:
    """What a ``work`` run did."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    dropped: int = 0
    """Steps given up because their claim was no longer held (409 ``stale_claim``)."""


class _LostClaim(Exception):
    """The heartbeat found the claim gone: someone else holds the step now."""


class _Worker:
    def __init__(
        self,
        client: BatonClient,
        handler: StepHandler,
        *,
        task_id: str | None,
        session_id: str | None,
        lease_s: float,
        worker: str,
        stop: asyncio.Event,
        poll_s: float,
        until_done: bool,
    ) -> None:
        self.client = client
        self.handler = handler
        self.task_id = task_id
        self.session_id = session_id
        self.lease_s = lease_s
        self.worker = worker
        self.stop = stop
        self.poll_s = poll_s
        self.until_done = until_done
        self.report = WorkReport()
        self.unavailable = False

    # -- the slots --------------------------------------------------------------------------
    async def slot(self) -> None:
        step: dict[str, Any] | None = None
        while not self.stop.is_set():
            if step is None:
                reply = await self._claim()
                step = reply.get("step") if reply else None
                if step is None:
                    status = reply.get("queue_status") if reply else None
                    if self.until_done and status in ("done", "failed"):
                        return
                    await self._idle(self.poll_s)
                    continue
                self.report.claimed += 1
            log.info("worker %s: claimed step %s", self.worker, step["step_id"])
            step = await self.run(step)

    async def _idle(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def _claim(self) -> dict[str, Any] | None:
        try:
            reply = await self.client.claim_step(
                task_id=self.task_id,
                session_id=None if self.task_id else self.session_id,
                worker=self.worker,
                lease_s=self.lease_s,
            )
        except BatonUnavailable as error:
            if not self.unavailable:  # once per outage, not once per poll
                log.warning(
                    "worker %s: cannot claim (%s); trying again", self.worker, error.message
                )
            self.unavailable = True
            return None
        if self.unavailable:
            log.warning("worker %s: Baton answers again", self.worker)
            self.unavailable = False
        return reply
        # Any other error reply (a 4xx: the scope is wrong) is the caller's mistake: raised.

    # -- one step ---------------------------------------------------------------------------
    async def run(self, step: dict[str, Any]) -> dict[str, Any] | None:
        """Runs the handler on ``step`` while heartbeating; completes or fails it. Returns the
        next step claimed with the completion, if any."""
        finished = asyncio.Event()
        work = asyncio.ensure_future(self.handler(step))
        beat = asyncio.ensure_future(self._heartbeat(step, finished))
        try:
            await asyncio.wait({work, beat}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            finished.set()
            work.cancel()
            beat.cancel()
            await asyncio.gather(work, beat, return_exceptions=True)
            log.info("worker %s: cancelled; claim %s left to lapse", self.worker, step["claim_id"])
            raise
        if not work.done():  # the heartbeat ended first: the claim is lost
            work.cancel()
            await asyncio.gather(work, beat, return_exceptions=True)
            self._dropped(step, "its lease lapsed while the handler ran")
            return None
        finished.set()  # ends the heartbeats even if a request swallows the cancellation
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        if work.cancelled():
            await self._fail(step, "the handler was cancelled")
            return None
        error = work.exception()
        if error is not None:
            log.info("worker %s: step %s raised %r", self.worker, step["step_id"], error)
            await self._fail(step, _message(error))
            return None
        return await self._complete(step, work.result())

    async def _heartbeat(self, step: dict[str, Any], finished: asyncio.Event) -> None:
        """Extends the lease every third of it until ``finished``; returns early when the claim
        is lost. It looks at ``finished`` before each heartbeat rather than trusting
        cancellation alone: on Python 3.11 ``asyncio.wait_for`` (inside nats-py's request)
        loses a cancellation that arrives as its reply does, and the loop would go on
        renewing a claim nobody works on."""
        interval = self.lease_s / 3
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), interval)
            if finished.is_set():
                return
            try:
                await self.client.heartbeat_step(
                    task_id=step["task_id"],
                    step_id=step["step_id"],
                    claim_id=step["claim_id"],
                    lease_s=self.lease_s,
                )
            except BatonUnavailable as error:  # the lease may still hold: keep trying
                log.warning("worker %s: heartbeat not answered (%s)", self.worker, error.message)
            except BatonRequestError as error:
                if _stale(error) or error.code == 404:
                    return
                log.warning("worker %s: heartbeat refused: %s", self.worker, error)

    async def _complete(self, step: dict[str, Any], result: Any) -> dict[str, Any] | None:
        chain = not self.stop.is_set()
        try:
            reply = await self._deliver(
                lambda msg_id: self.client.complete_step(
                    task_id=step["task_id"],
                    step_id=step["step_id"],
                    result=result,
                    claim_id=step["claim_id"],
                    claim_next=chain or None,
                    worker=self.worker if chain else None,
                    session_id=self.session_id if chain and not self.task_id else None,
                    lease_s=self.lease_s if chain else None,
                    msg_id=msg_id,
                )
            )
        except BatonRequestError as error:
            if _stale(error):
                self._dropped(step, "its claim no longer held at completion")
                return None
            # The result was refused (too large, not JSON...): the attempt failed.
            await self._fail(step, f"the result was refused: {error}")
            return None
        except (TypeError, ValueError) as error:  # the result is not JSON
            await self._fail(step, f"the result is not JSON: {_message(error)}")
            return None
        self.report.completed += 1
        log.info("worker %s: completed step %s", self.worker, step["step_id"])
        following = (reply.get("next") or {}).get("step") if chain else None
        if following is None:
            return None
        self.report.claimed += 1
        return cast("dict[str, Any]", following)

    async def _fail(self, step: dict[str, Any], message: str) -> None:
        try:
            await self._deliver(
                lambda msg_id: self.client.fail_step(
                    task_id=step["task_id"],
                    step_id=step["step_id"],
                    message=message,
                    claim_id=step["claim_id"],
                    msg_id=msg_id,
                )
            )
        except BatonRequestError as error:
            if not _stale(error):
                raise
            self._dropped(step, "its claim no longer held when failing it")
            return
        self.report.failed += 1
        log.info("worker %s: failed step %s: %s", self.worker, step["step_id"], message)

    async def _deliver(self, send: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Sends a completion or failure until Baton answers, always with the same message id:
        applied once even when a reply is lost, and answered from Baton's record if it was."""
        msg_id = f"w-{uuid.uuid4().hex}"
        wait = 0.05
        while True:
            try:
                return await send(msg_id)
            except BatonUnavailable as error:
                log.warning("worker %s: %s; sending again", self.worker, error.message)
                await asyncio.sleep(wait)
                wait = min(MAX_BACKOFF_S, wait * 2)

    def _dropped(self, step: dict[str, Any], why: str) -> None:
        self.report.dropped += 1
        log.warning(
            "worker %s: dropped step %s (claim %s): %s; someone else holds it now",
            self.worker,
            step["step_id"],
            step["claim_id"],
            why,
        )


async def work(
    client: BatonClient,
    handler: StepHandler,
    *,
    task_id: str | None = None,
    session_id: str | None = None,
    concurrency: int = 1,
    lease_s: float = 30.0,
    worker: str | None = None,
    stop: asyncio.Event | None = None,
    poll_s: float = 0.5,
    until_done: bool = False,
) -> WorkReport:
    """Claims steps (of ``task_id``, else of ``session_id``'s running task, else anywhere) and
    runs ``handler`` on each, ``concurrency`` at a time, until ``stop`` is set or, with
    ``until_done``, until the scope has nothing left to hand out (its queue status is ``done``
    or ``failed``). With nothing claimable it asks again every ``poll_s`` seconds."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not 0 < lease_s <= 86_400:
        raise ValueError("lease_s must be in (0, 86400]")
    runner = _Worker(
        client,
        handler,
        task_id=task_id,
        session_id=session_id,
        lease_s=lease_s,
        worker=worker or default_worker_name(),
        stop=stop or asyncio.Event(),
        poll_s=poll_s,
        until_done=until_done,
    )
    slots = [asyncio.ensure_future(runner.slot()) for _ in range(concurrency)]
    try:
        await asyncio.gather(*slots)
    finally:
        for slot in slots:
            slot.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
    return runner.report


# -- triggers -------------------------------------------------------------------------------


@dataclass
class TriggerReport:
    """What a ``consume_triggers`` run did."""

    handled: int = 0
    skipped: int = 0
    failed: int = 0


def durable_name(session_id: str) -> str:
    """The default durable consumer of a session's triggers (a valid consumer name)."""
    return "baton-worker-" + re.sub(r"[^A-Za-z0-9_-]", "_", session_id)


def stale_reason(trigger: dict[str, Any], view: dict[str, Any]) -> str | None:
    """Why ``trigger`` no longer asks for work, given its task's view now; None if it does."""
    if view.get("status") != "running":
        return f"its task is {view.get('status')}"
    step = next((s for s in view.get("steps", []) if s["step_id"] == trigger["step_id"]), None)
    if step is None:
        return "its step is no longer in the plan"
    if step["status"] != "current":
        return f"its step is {step['status']}, no longer current"
    made = (trigger.get("payload") or {}).get("parent_action_id")
    if made and step.get("parent_action_id") and made != step["parent_action_id"]:
        return "its step was made current again since"
    return None


async def consume_triggers(
    client: BatonClient,
    session_id: str,
    handler: TriggerHandler,
    *,
    durable: str | None = None,
    stop: asyncio.Event | None = None,
    ack_wait_s: float = 60.0,
    on_skip: Callable[[dict[str, Any], str], None] | None = None,
) -> TriggerReport:
    """Hands each trigger of ``session_id`` whose step is still current to
    ``handler(trigger, step)`` and acknowledges it once handled, until ``stop`` is set.

    A trigger whose step is no longer current is acknowledged without calling the handler
    (``on_skip(trigger, reason)`` is told, and it is logged). A handler that raises gets the
    trigger again after a second; one that takes longer than ``ack_wait_s`` gets it again too.
    The consumer is durable (``durable``, default ``baton-worker-<session>``): a restarted
    consumer goes on after the last trigger it acknowledged."""
    stop = stop or asyncio.Event()
    report = TriggerReport()
    js = client.nc.jetstream()
    stream = stream_names(client.prefix)[1]
    subscription = await js.pull_subscribe(
        trigger_subject(client.prefix, session_id),
        durable=durable or durable_name(session_id),
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait_s,
        ),
    )
    try:
        while not stop.is_set():
            try:
                messages = await subscription.fetch(1, timeout=0.5)
            except TimeoutError:
                continue
            for msg in messages:
                trigger = json.loads(msg.data)
                try:
                    view = await client.task(task_id=trigger["task_id"])
                except BatonRequestError as error:
                    if error.code != 404:
                        await msg.nak(delay=1.0)
                        continue
                    view = {"status": "gone", "steps": []}
                reason = stale_reason(trigger, view)
                if reason is not None:
                    report.skipped += 1
                    log.info("trigger %s skipped: %s", trigger.get("trigger_id"), reason)
                    if on_skip is not None:
                        on_skip(trigger, reason)
                    await msg.ack()
                    continue
                step = next(s for s in view["steps"] if s["step_id"] == trigger["step_id"])
                try:
                    await handler(trigger, step)
                except Exception:
                    report.failed += 1
                    log.exception("trigger %s: the handler raised", trigger.get("trigger_id"))
                    await msg.nak(delay=1.0)
                    continue
                report.handled += 1
                await msg.ack()
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    return report
