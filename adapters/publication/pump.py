"""The loop both publishers share, and what they share besides: the message encoding and the
error that makes a pump retry."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

import nats.errors
import nats.js.errors

from baton.adapters.publication.acks import AckInbox, inbox_for
from baton.domain import codec

log = logging.getLogger("baton.adapters.publication")

T = TypeVar("T")

MSG_ID = "Nats-Msg-Id"

#: Errors after which a publication is retried: NATS down, reconnecting, slow or refusing.
RETRYABLE = (nats.errors.Error, asyncio.TimeoutError, OSError)


class PublicationError(RuntimeError):
    """Some messages of a batch were not acknowledged; nothing was recorded, retry the batch."""


def _json_default(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        return isoformat()
    return str(value)


def encode(body: Any) -> bytes:
    """The JSON of a published message."""
    return codec.dumps_bytes(body, _json_default)


#: The shortest time between the starts of two pumps of the relay and of the scheduler. A pump
#: after a quiet spell starts at once (an idle service publishes a command's events as soon as
#: it is woken); under a steady stream of commands, each pump takes what came in this long.
#: Measured (``python -m bench cpu``, same session, A/B twice): the publisher's CPU per command
#: at 1 / 16 / 100 in flight 1.74-1.92 / 0.46-0.52 / 0.33-0.37 ms with 10 and 5 ms, 0.58-0.83 /
#: 0.27-0.38 / 0.28-0.32 ms with 50 ms; with it, commands/s at 1 in flight rose from 370-393 to
#: 414-514, as the publisher no longer takes the CPU a reply's round trip needs. 100 ms gained
#: nothing more. What it costs: a progress message or a trigger published up to 50 ms later
#: while commands keep coming.
BUSY_INTERVAL_S = 0.05


class Pump:
    """The loop both publishers share: pump, then sleep until woken, due, or the poll interval;
    on a failure, back off (never skipping: the next pump retries the same messages)."""

    poll_interval: float = 0.1
    min_backoff: float = 0.1
    max_backoff: float = 1.0
    """The longest wait between two failed pumps. It bounds how long publication lags behind
    NATS coming back: a JetStream cluster electing a new stream leader answers "no responders"
    for a few seconds, and the first pump after the election publishes the backlog."""
    min_interval: float = 0.0
    """The shortest time between the starts of two pumps: under load, wake-ups (one per
    command) are coalesced and each pump handles a bigger batch, for less fixed cost each."""
    name: str = "publisher"
    js: Any = None
    """The JetStream context it publishes with."""

    def __init__(self) -> None:
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failures = 0
        """Consecutive failed pumps (0 when the last one succeeded)."""
        self._streams_missing = False
        self._acks: AckInbox | None = None
        """JetStream acknowledgements on one inbox of this publisher's (``publish_acked``)."""

    async def pump_once(self) -> int:
        raise NotImplementedError

    async def publish_acked(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> asyncio.Future[Any]:
        """Publishes to JetStream (``self.js``); the future resolves to the acknowledgement.
        On the publisher's own inbox (two thirds of ``publish_async``'s cost per message),
        or through ``publish_async`` for a JetStream stand-in without a connection."""
        if self._acks is None:
            self._acks = inbox_for(self.js)
        if self._acks is not None:
            return await self._acks.publish(subject, body, headers)
        future: asyncio.Future[Any] = await self.js.publish_async(subject, body, headers=headers)
        return future

    async def _idle_timeout(self) -> float:
        return self.poll_interval

    def wake(self) -> None:
        """Nudges the publisher to look for new work now (safe from any thread)."""
        loop = self._loop
        if loop is None:
            self._wakeup.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wakeup.set)

    def _fail_on(self, errors: Sequence[BaseException], what: str) -> None:
        """Raises when a pump's publishes failed: a cancellation as it is, anything else as a
        PublicationError (so nothing is recorded and the next pump retries); a missing stream
        is re-created before that retry."""
        for error in errors:
            if not isinstance(error, Exception):
                raise error
        if errors:
            if any(isinstance(e, nats.js.errors.NoStreamResponseError) for e in errors):
                self._streams_missing = True
            raise PublicationError(f"{len(errors)} {what}: {errors[0]!r}") from errors[0]

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def run(self, stop: asyncio.Event) -> None:
        """Publishes until ``stop`` is set, then makes one last, bounded attempt to flush."""
        self._loop = asyncio.get_running_loop()
        watcher = asyncio.create_task(self._wake_on(stop))
        backoff = self.min_backoff
        clock = time.monotonic
        started = clock() - self.min_interval
        try:
            while not stop.is_set():
                rest = self.min_interval - (clock() - started)
                if rest > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), rest)
                    if stop.is_set():
                        break
                started = clock()
                self._wakeup.clear()
                try:
                    busy = await self._pump_batch()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self.failures += 1
                    level = logging.WARNING if self.failures in (1, 10) else logging.DEBUG
                    log.log(level, "%s: will retry in %.1f s: %r", self.name, backoff, error)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                if self.failures:
                    log.info("%s: publishing again after %d failures", self.name, self.failures)
                self.failures = 0
                backoff = self.min_backoff
                if busy:
                    continue
                timeout = await self._idle_timeout()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pump_once(), 2.0)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self._loop = None
            if self._acks is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._acks.close(), 2.0)

    async def _pump_batch(self) -> bool:
        """One pump; True when there is probably more to do right away."""
        await self.pump_once()
        return False

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()


__all__ = ["MSG_ID", "RETRYABLE", "PublicationError", "Pump", "encode"]
