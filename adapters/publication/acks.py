"""JetStream acknowledgements of asynchronous publishes, on one inbox subscription.

nats-py's ``publish_async`` costs about as much again as the publish itself: a task per message
(``asyncio.wait_for`` around its pending semaphore), random bytes for each reply token, the
acknowledgement decoded by the standard library into a dataclass. The relay bounds what it has
in flight by its batch, and it only needs to know whether each message was stored, already
stored (a duplicate), or refused. ``AckInbox`` does just that: one wildcard subscription on the
connection's inbox prefix, a counter as each message's token, a future per message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import orjson

#: The status header nats-server sets on a message that met no responder (no stream).
_NO_RESPONDERS = "503"


@dataclass(frozen=True, slots=True)
class Ack:
    """What JetStream said of one stored message."""

    stream: str | None
    seq: int | None
    duplicate: bool


class AckInbox:
    """Publishes to JetStream and hands back a future per message for its acknowledgement.

    The future resolves to an ``Ack``, or fails with ``NoStreamResponseError`` (no stream took
    the subject) or ``APIError`` (the stream refused it). One whose acknowledgement never comes
    (the connection was lost meanwhile) is cancelled by the caller; it leaves nothing behind.
    """

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self._prefix: str | None = None
        self._subscription: Any = None
        self._futures: dict[str, asyncio.Future[Ack]] = {}
        self._count = 0
        self._subscribing = asyncio.Lock()

    @property
    def pending(self) -> int:
        """Messages sent whose acknowledgement has not come (nor been given up on)."""
        return len(self._futures)

    async def publish(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Ack]:
        if self._prefix is None:
            async with self._subscribing:  # concurrent first publishes share one subscription
                if self._prefix is None:
                    await self._subscribe()
        prefix = self._prefix
        assert prefix is not None
        self._count += 1
        token = str(self._count)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        futures = self._futures
        futures[token] = future
        future.add_done_callback(lambda _: futures.pop(token, None))
        try:
            await self.nc.publish(subject, body, reply=prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def _subscribe(self) -> None:
        prefix = f"{self.nc.new_inbox()}."
        self._subscription = await self.nc.subscribe(prefix + "*", cb=self._on_ack)
        self._prefix = prefix

    async def _on_ack(self, msg: Any) -> None:
        prefix = self._prefix
        if prefix is None:
            return
        future = self._futures.get(msg.subject[len(prefix) :])
        if future is None or future.done():
            return
        headers = msg.headers
        if headers and headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            future.set_exception(
                nats.js.errors.APIError(description=f"an unreadable acknowledgement: {msg.data!r}")
            )
            return
        error = reply.get("error") if isinstance(reply, dict) else {"description": str(reply)}
        if error is not None:
            future.set_exception(_refusal(error))
            return
        future.set_result(
            Ack(reply.get("stream"), reply.get("seq"), bool(reply.get("duplicate", False)))
        )

    async def close(self) -> None:
        subscription, self._subscription, self._prefix = self._subscription, None, None
        futures, self._futures = list(self._futures.values()), {}
        for future in futures:
            future.cancel()
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection is closed or closing
                return


def inbox_for(js: Any) -> AckInbox | None:
    """An inbox on the connection of JetStream context ``js`` (None for a stand-in without one:
    then ``js.publish_async`` is used)."""
    nc = getattr(js, "_nc", None)
    return AckInbox(nc) if nc is not None else None


def _refusal(error: Any) -> nats.js.errors.APIError:
    """The error JetStream's answer names (``BadRequestError`` for a 400, and so on), as nats-py
    makes it; its ``from_error`` raises it rather than returning it."""
    try:
        nats.js.errors.APIError.from_error(error)
    except nats.js.errors.APIError as refused:
        return refused
    except Exception:  # noqa: BLE001 - not the shape JetStream answers with
        pass
    return nats.js.errors.APIError(description=f"refused: {error!r}")


__all__ = ["Ack", "AckInbox", "inbox_for"]
