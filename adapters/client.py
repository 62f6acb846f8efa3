"""A typed async client for Baton's NATS service: one method per subject of the contract
(``baton.adapters.contract`` names each subject's method; the method finds its subject there).

    async with await BatonClient.connect("nats://127.0.0.1:4222") as baton:
        task = await baton.create_task(task_name="report", plan={"steps": [...]})
        await baton.start_task(task_id=task["task_id"])

Replies are the contract's JSON as dicts. An error reply raises BatonRequestError with the
contract's code, reason, message and details; no service answering raises BatonUnavailable.
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, cast

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel

from baton.adapters.config import nats_servers
from baton.adapters.contract import subject_of
from baton.adapters.messages import ERROR_CODE_HEADER, ERROR_HEADER, MSG_ID_HEADER, encode
from baton.domain import commands as c


class BatonRequestError(Exception):
    """Baton answered a request with an error (the contract's ``{"error": {...}}``)."""

    def __init__(self, code: int, reason: str, message: str, details: Any = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details


class BatonUnavailable(BatonRequestError):
    """No Baton service answered (no responders, or no reply in time).

    After a timeout a command may or may not have been applied: repeat it with the same
    ``msg_id`` to find out safely.
    """


class BatonClient:
    """Sends requests to the Baton service under ``prefix``; ``timeout`` is per request (s)."""

    def __init__(self, nc: Client, prefix: str = "baton", timeout: float = 10.0) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout
        self._owns_connection = False

    @classmethod
    async def connect(
        cls,
        url: str = "nats://127.0.0.1:4222",
        *,
        prefix: str = "baton",
        timeout: float = 10.0,
        **options: Any,
    ) -> BatonClient:
        """Opens a NATS connection (closed by ``close()``); ``options`` go to ``nats.connect``.
        ``url`` may name several servers, comma-separated."""
        nc = await nats.connect(nats_servers(url), **options)
        client = cls(nc, prefix, timeout)
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
        body = encode({k: v for k, v in payload.items() if v is not None})
        return await self.request_raw(subject, body, msg_id=msg_id, timeout=timeout)

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
        sent = dict(headers or {})
        if msg_id is not None:
            sent[MSG_ID_HEADER] = msg_id
        full = f"{self.prefix}.{subject}"
        wait = self.timeout if timeout is None else timeout
        try:
            msg = await self.nc.request(
                full,
                body,
                timeout=wait,
                headers=sent or None,
            )
        except NoRespondersError:
            raise BatonUnavailable(
                503, "no_responders", f"no Baton service answers on {full}"
            ) from None
        except NatsTimeoutError:
            raise BatonUnavailable(
                503, "timeout", f"no reply on {full} within {wait:g} s"
            ) from None
        received = msg.headers or {}
        if ERROR_CODE_HEADER in received:
            raise _error_from(received, msg.data)
        return json.loads(msg.data)

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
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.claim``: ``{step, queue_status}``."""
        return await self._call(
            c.ClaimStep,
            {
                "session_id": session_id,
                "task_id": task_id,
                "worker": worker,
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
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.complete``: the step plus ``task_status``."""
        return await self._call(
            c.CompleteStep,
            {"task_id": task_id, "step_id": step_id, "result": result, "command_id": command_id},
            msg_id=msg_id,
        )

    async def fail_step(
        self,
        *,
        task_id: str,
        step_id: str,
        message: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.fail``: the step plus ``task_status``."""
        return await self._step(c.FailStep, task_id, step_id, message, command_id, msg_id)

    async def skip_step(
        self,
        *,
        task_id: str,
        step_id: str,
        message: str | None = None,
        command_id: str | None = None,
        msg_id: str | None = None,
    ) -> dict[str, Any]:
        """``step.skip``: the step plus ``task_status``."""
        return await self._step(c.SkipStep, task_id, step_id, message, command_id, msg_id)

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

    async def _step(
        self,
        request: type[BaseModel],
        task_id: str,
        step_id: str,
        message: str | None,
        command_id: str | None,
        msg_id: str | None,
    ) -> dict[str, Any]:
        return await self._call(
            request,
            {"task_id": task_id, "step_id": step_id, "message": message, "command_id": command_id},
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
