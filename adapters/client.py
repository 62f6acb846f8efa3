"""A typed async client for Baton's NATS service: one method per subject of the contract
(``baton.adapters.contract`` names each subject's method; the method finds its subject there).

    async with await BatonClient.connect("nats://127.0.0.1:4222") as baton:
        task = await baton.create_task(task_name="report", plan={"steps": [...]})
        await baton.start_task(task_id=task["task_id"])

Replies are the contract's JSON as dicts. An error reply raises BatonRequestError with the
contract's code, reason, message and details; no service answering raises BatonUnavailable.

Timeouts agree with the service's: every command carries a ``Nats-Msg-Id`` (the caller's
``msg_id``, else its ``command_id``, else one made up here), and a command that gets no reply in
time is sent again with the same id (``retries`` times), so a command that was applied but
whose reply was lost is answered from the service's record instead of being reported as failed
or applied twice. A command that may wait on the planner (a create or replan without a plan, a
next with ``replan``) waits ``planning_timeout``, longer than the service's planner timeout.

(Over 500 lines because it is the contract's one typed surface: a method per subject, each with
its parameters named and documented for an editor's completion, rather than ``**kwargs``.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any, cast

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel

from baton.adapters import contract
from baton.adapters.config import nats_servers
from baton.adapters.contract import subject_of
from baton.adapters.messages import ERROR_CODE_HEADER, ERROR_HEADER, MSG_ID_HEADER, encode
from baton.domain import commands as c
from baton.domain.codec import loads


class BatonRequestError(Exception):
    """Baton answered a request with an error (the contract's ``{"error": {...}}``)."""

    def __init__(self, code: int, reason: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details


class BatonUnavailable(BatonRequestError):
    """No Baton service answered (no responders, or no reply in time, after the retries).

    After a timeout a command may or may not have been applied: repeat it with the same
    ``msg_id`` (``details["msg_id"]``) to find out safely.
    """


#: The service's default planner timeout (``BATON_PLANNER_TIMEOUT_S``), and how much longer a
#: command that may wait on the planner waits for its reply by default.
PLANNER_TIMEOUT_S = 60.0
PLANNING_MARGIN_S = 15.0


def new_msg_id() -> str:
    """A fresh idempotency key for a command sent without one."""
    return f"c-{uuid.uuid4().hex}"


class BatonClient:
    """Sends requests to the Baton service under ``prefix``.

    ``timeout`` is each attempt's wait for a reply (s); ``planning_timeout`` that of a command
    that may wait on the planner (default: the planner timeout plus a margin); a request that
    times out is sent ``retries`` more times, a command with the same ``Nats-Msg-Id``."""

    def __init__(
        self,
        nc: Client,
        prefix: str = "baton",
        timeout: float = 10.0,
        *,
        planning_timeout: float | None = None,
        retries: int = 2,
    ) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout
        self.planning_timeout = max(
            timeout,
            PLANNER_TIMEOUT_S + PLANNING_MARGIN_S if planning_timeout is None else planning_timeout,
        )
        self.retries = retries
        self._owns_connection = False

    @classmethod
    async def connect(
        cls,
        url: str = "nats://127.0.0.1:4222",
        *,
        prefix: str = "baton",
        timeout: float = 10.0,
        planning_timeout: float | None = None,
        retries: int = 2,
        **options: Any,
    ) -> BatonClient:
        """Opens a NATS connection (closed by ``close()``); ``options`` go to ``nats.connect``.
        ``url`` may name several servers, comma-separated."""
        nc = await nats.connect(nats_servers(url), **options)
        client = cls(nc, prefix, timeout, planning_timeout=planning_timeout, retries=retries)
        client._owns_connection = True
        return client

    async def close(self) -> None:
        """Drains and closes the connection if this client opened it."""
        if self._owns_connection and not self.nc.is_closed:
            await self.nc.drain()

    async def __aenter__(self) -> BatonClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- transport ---------------------------------------------------------------------------
    async def request(
        self,
        subject: str,
        payload: dict[str, Any],
        *,
        msg_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Sends ``payload`` (None values left out) to ``<prefix>.<subject>``; the decoded reply."""
        sent = {k: v for k, v in payload.items() if v is not None}
        return await self._send(subject, encode(sent), sent, msg_id, None, timeout)

    async def request_raw(
        self,
        subject: str,
        body: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Sends ``body`` as it is (for tests of malformed requests); the decoded reply."""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        fields = payload if isinstance(payload, dict) else {}
        return await self._send(subject, body, fields, msg_id, headers, timeout)

    def timeout_for(self, subject: str, payload: Mapping[str, Any]) -> float:
        """How long one attempt of this request waits for its reply by default."""
        if contract.waits_on_planner(subject, payload):
            return self.planning_timeout
        return self.timeout

    async def _send(
        self,
        subject: str,
        body: bytes,
        payload: Mapping[str, Any],
        msg_id: str | None,
        headers: dict[str, str] | None,
        timeout: float | None,
    ) -> Any:
        sent = dict(headers or {})
        if msg_id is not None:
            sent[MSG_ID_HEADER] = msg_id
        row = contract.BY_NAME.get(subject)
        is_command = row is not None and row.kind == "command"
        # Every command carries an id; the body's command_id is one (the header would win).
        if is_command and MSG_ID_HEADER not in sent and payload.get("command_id") is None:
            sent[MSG_ID_HEADER] = new_msg_id()
        full = f"{self.prefix}.{subject}"
        wait = self.timeout_for(subject, payload) if timeout is None else timeout
        attempts = 1 + max(0, self.retries)
        for attempt in range(1, attempts + 1):
            try:
                msg = await self.nc.request(full, body, timeout=wait, headers=sent or None)
                break
            except NoRespondersError:
                raise BatonUnavailable(
                    503, "no_responders", f"no Baton service answers on {full}"
                ) from None
            except NatsTimeoutError:
                if attempt < attempts:
                    continue  # again, with the same Nats-Msg-Id: applied at most once
                sent_id = sent.get(MSG_ID_HEADER) or payload.get("command_id")
                tried = f"{attempts} attempts of {wait:g} s" if attempts > 1 else f"{wait:g} s"
                raise BatonUnavailable(
                    503,
                    "timeout",
                    f"no reply on {full} within {tried}",
                    {"msg_id": sent_id} if sent_id else None,
                ) from None
        received = msg.headers or {}
        if ERROR_CODE_HEADER in received:
            raise _error_from(received, msg.data)
        return loads(msg.data)

    async def _call(
        self, request: type[BaseModel], payload: dict[str, Any], *, msg_id: str | None = None
    ) -> dict[str, Any]:
        """Sends ``payload`` on the subject the contract table gives ``request``."""
        reply = await self.request(subject_of(request), payload, msg_id=msg_id)
        return cast("dict[str, Any]", reply)

    # -- commands ----------------------------------------------------------------------------
    async def create_task(
        self,
        *,
        task_name: str,
        task_instruction: str | None = None,
        session_id: str | None = None,
        priority: int | None = None,
        plan: dict[str, Any] | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.create``: the new task's view."""
        return await self._call(
            c.CreateTask,
            {
                "task_name": task_name,
                "task_instruction": task_instruction,
                "session_id": session_id,
                "priority": priority,
                "plan": plan,
                "command_id": command_id,
            },
            msg_id=msg_id,
        )

    async def start_task(
        self,
        *,
        task_id: str,
        delay_s: float | None = None,
        priority: int | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.start``: ``{status, step, trigger}``."""
        return await self._call(
            c.StartTask,
            {
                "task_id": task_id,
                "delay_s": delay_s,
                "priority": priority,
                "command_id": command_id,
            },
            msg_id=msg_id,
        )

    async def next_step(
        self,
        *,
        task_id: str,
        replan: bool | None = None,
        plan: dict[str, Any] | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.next``: ``{status, step, trigger}``."""
        return await self._call(
            c.NextStep,
            {"task_id": task_id, "replan": replan, "plan": plan, "command_id": command_id},
            msg_id=msg_id,
        )

    async def replan_task(
        self,
        *,
        task_id: str,
        plan: dict[str, Any] | None = None,
        advance_next: bool | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.replan``: the task view with ``diff``."""
        return await self._call(
            c.ReplanTask,
            {
                "task_id": task_id,
                "plan": plan,
                "advance_next": advance_next,
                "command_id": command_id,
            },
            msg_id=msg_id,
        )

    async def complete_task(
        self,
        *,
        task_id: str,
        message: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.complete``: the task view."""
        return await self._call(
            c.CompleteTask,
            {"task_id": task_id, "message": message, "command_id": command_id},
            msg_id=msg_id,
        )

    async def fail_task(
        self,
        *,
        task_id: str,
        message: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.fail``: the task view."""
        return await self._call(
            c.FailTask,
            {"task_id": task_id, "message": message, "command_id": command_id},
            msg_id=msg_id,
        )

    async def cancel_task(
        self,
        *,
        task_id: str,
        reason: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.cancel``: the task view."""
        return await self._call(
            c.CancelTask,
            {"task_id": task_id, "reason": reason, "command_id": command_id},
            msg_id=msg_id,
        )

    async def add_context(
        self,
        *,
        task_id: str,
        key: str,
        value: Any,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``task.context``: the task view."""
        body: dict[str, Any] = {"task_id": task_id, "key": key, "command_id": command_id}
        payload = encode({**{k: v for k, v in body.items() if v is not None}, "value": value})
        reply = await self.request_raw(subject_of(c.AddContext), payload, msg_id=msg_id)
        return cast("dict[str, Any]", reply)

    async def claim_step(
        self,
        *,
        session_id: str | None = None,
        task_id: str | None = None,
        worker: str | None = None,
        lease_s: float | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.claim``: ``{step, queue_status}``; the step carries ``claim_id`` and
        ``lease_expires_at`` (``lease_s`` from now, else the service's default lease)."""
        return await self._call(
            c.ClaimStep,
            {
                "session_id": session_id,
                "task_id": task_id,
                "worker": worker,
                "lease_s": lease_s,
                "command_id": command_id,
            },
            msg_id=msg_id,
        )

    async def complete_step(
        self,
        *,
        task_id: str,
        step_id: str,
        result: Any = None,
        claim_id: str | None = None,
        claim_next: bool | None = None,
        worker: str | None = None,
        session_id: str | None = None,
        lease_s: float | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.complete``: the step plus ``task_status``. With ``claim_id``, only while that
        claim holds the step (else 409 ``stale_claim``). With ``claim_next``, the reply's
        ``next`` is a claim made right after, in ``session_id`` or else the step's task."""
        return await self._call(
            c.CompleteStep,
            {
                "task_id": task_id,
                "step_id": step_id,
                "result": result,
                "claim_id": claim_id,
                "claim_next": claim_next,
                "worker": worker,
                "session_id": session_id,
                "lease_s": lease_s,
                "command_id": command_id,
            },
            msg_id=msg_id,
        )

    async def fail_step(
        self,
        *,
        task_id: str,
        step_id: str,
        message: str | None = None,
        claim_id: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.fail``: the step plus ``task_status`` (with ``claim_id``: only while that
        claim holds the step)."""
        return await self._step(
            c.FailStep, task_id, step_id, message, command_id, msg_id, claim_id=claim_id
        )

    async def skip_step(
        self,
        *,
        task_id: str,
        step_id: str,
        message: str | None = None,
        claim_id: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.skip``: the step plus ``task_status`` (with ``claim_id``: only while that
        claim holds the step)."""
        return await self._step(
            c.SkipStep, task_id, step_id, message, command_id, msg_id, claim_id=claim_id
        )

    async def retry_step(
        self,
        *,
        task_id: str,
        step_id: str,
        message: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.retry``: the step plus ``task_status``."""
        return await self._step(c.RetryStep, task_id, step_id, message, command_id, msg_id)

    async def heartbeat_step(
        self,
        *,
        task_id: str,
        step_id: str,
        claim_id: str,
        lease_s: float | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.heartbeat``: extends the claim's lease to ``lease_s`` from now (else the
        service's default); the step plus ``task_status``. 409 ``stale_claim`` when the claim
        no longer holds the step."""
        return await self._call(
            c.HeartbeatStep,
            {
                "task_id": task_id,
                "step_id": step_id,
                "claim_id": claim_id,
                "lease_s": lease_s,
                "command_id": command_id,
            },
            msg_id=msg_id,
        )

    async def _step(
        self,
        request: type[BaseModel],
        task_id: str,
        step_id: str,
        message: str | None,
        command_id: str | None,
        msg_id: str | None,
        *,
        claim_id: str | None = None,
    ) -> dict[str, Any]:
        return await self._call(
            request,
            {
                "task_id": task_id,
                "step_id": step_id,
                "message": message,
                "claim_id": claim_id,
                "command_id": command_id,
            },
            msg_id=msg_id,
        )

    # -- queries -----------------------------------------------------------------------------
    async def active(self, *, session_id: str) -> dict[str, Any] | None:
        """``query.active``: the session's running task view, or None."""
        reply = await self.request(subject_of(c.ActiveQuery), {"session_id": session_id})
        return cast("dict[str, Any] | None", reply)

    async def task(self, *, task_id: str) -> dict[str, Any]:
        """``query.task``: the task view."""
        return await self._call(c.TaskQuery, {"task_id": task_id})

    async def tasks(
        self,
        *,
        status: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> dict[str, Any]:
        """``query.tasks``: ``{tasks, cursor}``."""
        return await self._call(
            c.TasksQuery,
            {"status": status, "session_id": session_id, "limit": limit, "after": after},
        )

    async def queue(
        self, *, session_id: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """``query.queue``: ``{steps, triggers}``."""
        return await self._call(c.QueueQuery, {"session_id": session_id, "limit": limit})

    async def history(self, *, task_id: str, version: int | None = None) -> dict[str, Any]:
        """``query.history``: ``{task_id, events}``, or ``{task_id, version, task}``."""
        return await self._call(c.HistoryQuery, {"task_id": task_id, "version": version})


def _error_from(headers: dict[str, str], data: bytes) -> BatonRequestError:
    try:
        error = json.loads(data)["error"]
        return BatonRequestError(
            int(error["code"]), str(error["reason"]), str(error["message"]), error.get("details")
        )
    except (ValueError, KeyError, TypeError):
        code_text = headers.get(ERROR_CODE_HEADER, "500")
        code = int(code_text) if code_text.isdigit() else 500
        return BatonRequestError(code, "error", headers.get(ERROR_HEADER, ""))
