"""Publication on JetStream: task progress through an outbox relay, triggers when they are due.

Both publishers follow the same rule: publish with a ``Nats-Msg-Id``, wait for JetStream's
acknowledgement, and only then record durably that the message went out. A crash between the two
republishes the same message ids, which JetStream drops as duplicates (``ack.duplicate``) within
the stream's ``duplicate_window``, so each message is stored exactly once.

- ``ProgressRelay`` reads the application's notification log from a position it tracks in the
  event store itself (an eventsourcing tracking recorder, application name
  ``progress-relay:<prefix>``) and publishes every Task event to ``<prefix>.progress.<task_id>``.
  The events of one task are published one after the other, each only after the previous one was
  acknowledged; different tasks are published concurrently. So a message lost on a broken
  connection can never be overtaken by a later event of the same task, even when two relays (two
  instances on one PostgreSQL database) publish the same log at once.
- ``TriggerScheduler`` asks the projections for due triggers, publishes each to
  ``<prefix>.trigger.<session_id>`` and marks it published in the projections (a mark a rebuild
  never drops). A withdrawn or replaced trigger leaves the pending table, so it is never published.
  (The projections are caught up right before each look, so only a withdrawal committed in the
  few milliseconds between that look and the publication of a trigger already due can lose the
  race; the trigger had fired by then.)

The event store is synchronous: every store call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast
from uuid import UUID

import nats.errors
import nats.js.errors
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import IntegrityError, Notification, Tracking, TrackingRecorder
from nats.js.api import StorageType, StreamConfig

from baton.domain import codec
from baton.domain.model import Task
from baton.domain.services import BatonApp
from baton.domain.views import history_entry

log = logging.getLogger(__name__)

T = TypeVar("T")

DUPLICATE_WINDOW_S = 3600.0
"""How long JetStream remembers a message id. A relay that crashed after publishing and before
recording its position republishes the same ids when it restarts: they are dropped as duplicates
if the restart comes within this window. Longer costs server memory (one entry per message
published in the window: at 1,000 events/s, an hour is 3.6 million ids); shorter risks a
duplicate after a long outage of the event store or of the relay between publish and record."""

MSG_ID = "Nats-Msg-Id"

#: Errors after which a publication is retried: NATS down, reconnecting, slow or refusing.
RETRYABLE = (nats.errors.Error, asyncio.TimeoutError, OSError)


# -- streams ------------------------------------------------------------------------------------


def stream_names(prefix: str = "baton") -> tuple[str, str]:
    """``(progress stream, triggers stream)`` for a subject prefix.

    ``BATON_PROGRESS`` / ``BATON_TRIGGERS`` for the default prefix ``baton``; any other prefix
    gets a suffix, ``BATON_PROGRESS_<PREFIX>``, upper-cased with every character a stream name
    cannot hold (``.``, ``*``, ``>``, spaces...) turned into ``_``, so several deployments with
    their own prefixes can share one server. (Two prefixes differing only in such characters,
    ``a.b`` and ``a_b``, would share streams: don't do that.)
    """
    if prefix == "baton":
        return "BATON_PROGRESS", "BATON_TRIGGERS"
    suffix = re.sub(r"[^A-Za-z0-9_-]", "_", prefix).upper()
    return f"BATON_PROGRESS_{suffix}", f"BATON_TRIGGERS_{suffix}"


def stream_configs(prefix: str = "baton") -> list[StreamConfig]:
    """The two streams, on file storage, their subjects apart from the command subjects."""
    progress, triggers = stream_names(prefix)
    return [
        StreamConfig(
            name=progress,
            description="Baton: every task event, in order (subject <prefix>.progress.<task_id>)",
            subjects=[f"{prefix}.progress.>"],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=triggers,
            description="Baton: each trigger when it is due (subject <prefix>.trigger.<session>)",
            subjects=[f"{prefix}.trigger.>"],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
    ]


async def ensure_streams(js: Any, prefix: str = "baton") -> None:
    """Creates the progress and trigger streams if missing; updates their subjects and
    duplicate window if they exist (other settings an operator chose, like limits, are kept)."""
    for wanted in stream_configs(prefix):
        assert wanted.name is not None
        try:
            info = await js.stream_info(wanted.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config=wanted)
                log.info("created stream %s for %s", wanted.name, wanted.subjects)
                continue
            except nats.js.errors.BadRequestError:
                # Another instance created it meanwhile: fall through to the update.
                info = await js.stream_info(wanted.name)
        current = info.config
        if (
            sorted(current.subjects or []) != sorted(wanted.subjects or [])
            or current.duplicate_window != wanted.duplicate_window
        ):
            current.subjects = wanted.subjects
            current.duplicate_window = wanted.duplicate_window
            await js.update_stream(config=current)
            log.info("updated stream %s: subjects %s", wanted.name, wanted.subjects)


# -- shared machinery ---------------------------------------------------------------------------


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


class _Pump:
    """The loop both publishers share: pump, then sleep until woken, due, or the poll interval;
    on a failure, back off (never skipping: the next pump retries the same messages)."""

    poll_interval: float = 0.1
    min_backoff: float = 0.1
    max_backoff: float = 2.0
    min_interval: float = 0.0
    """The shortest time between the starts of two pumps: under load, wake-ups (one per
    command) are coalesced and each pump handles a bigger batch, for less fixed cost each."""
    name: str = "publisher"

    def __init__(self) -> None:
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failures = 0
        """Consecutive failed pumps (0 when the last one succeeded)."""
        self._streams_missing = False

    async def pump_once(self) -> int:
        raise NotImplementedError

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

    async def _pump_batch(self) -> bool:
        """One pump; True when there is probably more to do right away."""
        await self.pump_once()
        return False

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wakeup.set()


# -- progress -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """One task event, ready to publish."""

    notification_id: int
    aggregate_id: UUID
    version: int
    subject: str
    body: bytes

    @property
    def msg_id(self) -> str:
        return f"{self.aggregate_id}:{self.version}"


class ProgressRelay(_Pump):
    """Publishes every Task event of the notification log to ``<prefix>.progress.<task_id>``.

    An outbox relay: its position in the log is tracked in the event store (same database), and
    recorded only after JetStream acknowledged every event up to it.
    """

    name = "progress relay"
    min_interval = 0.01
    _task_topic = f"{Task.TOPIC}."

    def __init__(
        self,
        app: BatonApp,
        js: Any,
        prefix: str = "baton",
        batch: int = 500,
        *,
        publish_timeout: float = 2.0,
        tracking: TrackingRecorder | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.js = js
        self.prefix = prefix
        self.batch = batch
        self.publish_timeout = publish_timeout
        self.stream = stream_names(prefix)[0]
        self.tracking_name = f"progress-relay:{prefix}"
        """The application name the position is tracked under."""
        self._tracking = tracking
        self._position: int | None = None
        self._task_ids: OrderedDict[UUID, str] = OrderedDict()
        self.published = 0
        """Events JetStream stored for this relay (since it was made)."""
        self.duplicates = 0
        """Events JetStream had already (a republished batch, or another relay's)."""

    # -- the store, from a worker thread ------------------------------------------------------
    @property
    def tracking(self) -> TrackingRecorder:
        """Where the position lives: the event store's own database (SQLite file or PostgreSQL
        database), table ``tracking`` / ``baton_tracking``, one row per application name."""
        if self._tracking is None:
            self._tracking = self.app.factory.tracking_recorder()
        return self._tracking

    def read_position(self) -> int:
        """The last notification id whose event JetStream acknowledged (0 before any)."""
        return self.tracking.max_tracking_id(self.tracking_name) or 0

    def save_position(self, notification_id: int) -> None:
        """Records that every event up to ``notification_id`` is published."""
        self.tracking.insert_tracking(Tracking(self.tracking_name, notification_id))

    def _record(self, notification_id: int) -> int:
        try:
            self.save_position(notification_id)
        except IntegrityError:
            # Another relay on the same database recorded this position, or a later one.
            return max(notification_id, self.read_position())
        return notification_id

    def _read_batch(self) -> tuple[int, list[Outgoing]]:
        if self._position is None:
            self._position = self.read_position()
        notifications = self.app.recorder.select_notifications(
            self._position, self.batch, inclusive_of_start=False
        )
        if not notifications:
            return self._position, []
        return notifications[-1].id, [
            self._outgoing(n) for n in notifications if n.topic.startswith(self._task_topic)
        ]

    def _outgoing(self, notification: Notification) -> Outgoing:
        event = cast(CanMutateAggregate[UUID], self.app.decoded(notification))
        task_id = self._task_id_of(event)
        return Outgoing(
            notification_id=notification.id,
            aggregate_id=event.originator_id,
            version=event.originator_version,
            subject=f"{self.prefix}.progress.{task_id}",
            body=encode(history_entry(task_id, event)),
        )

    def _task_id_of(self, event: CanMutateAggregate[UUID]) -> str:
        aggregate_id = event.originator_id
        task_id = self._task_ids.get(aggregate_id)
        if task_id is None:
            task_id = getattr(event, "task_id", None)
            if task_id is None:  # a later event: the task id is in its first one
                first = self.app.recorder.select_events(aggregate_id, limit=1)
                created = self.app.mapper.to_domain_event(first[0])
                task_id = cast(str, getattr(created, "task_id"))  # noqa: B009
            self._task_ids[aggregate_id] = task_id
            if len(self._task_ids) > 10_000:
                self._task_ids.popitem(last=False)
        else:
            self._task_ids.move_to_end(aggregate_id)
        return task_id

    # -- publishing ---------------------------------------------------------------------------
    async def pump_once(self) -> int:
        """Publishes the next batch of the log and records the position; returns how many task
        events JetStream acknowledged (stored or duplicate). Raises ``PublicationError`` (nothing
        recorded) when some were not; the next call publishes the same batch again."""
        last_id, items = await self._in_thread(self._read_batch)
        if self._position is not None and last_id <= self._position:
            return 0
        if self._streams_missing:
            await ensure_streams(self.js, self.prefix)
            self._streams_missing = False
        await self.publish(items)
        self._position = await self._in_thread(self._record, last_id)
        return len(items)

    async def _pump_batch(self) -> bool:
        before = self._position
        await self.pump_once()
        return before != self._position

    async def publish(self, items: Sequence[Outgoing]) -> None:
        """Publishes ``items`` and waits for every acknowledgement: in order within each task,
        tasks concurrently. Raises ``PublicationError`` if any was not acknowledged.

        In rounds: round k publishes the k-th event of every task still going (JetStream's
        asynchronous publish, one future per message, no timer each) and waits for the round's
        acknowledgements; a task whose event was not acknowledged stops there. So each event
        still goes out only after the previous one of its task was acknowledged, as with one
        ``js.publish`` after another, at a fraction of the per-message cost.
        """
        chains: dict[UUID, list[Outgoing]] = {}
        for item in items:
            chains.setdefault(item.aggregate_id, []).append(item)
        errors: list[BaseException] = []
        going = list(chains.values())
        index = 0
        while going:
            sent: list[tuple[list[Outgoing], asyncio.Future[Any]]] = []
            for chain in going:
                item = chain[index]
                try:
                    future = await self._send(item)
                except asyncio.CancelledError:
                    for _, pending in sent:
                        pending.cancel()
                    raise
                except Exception as failed:  # noqa: BLE001 - the chain stops, reported below
                    errors.append(failed)
                    continue
                sent.append((chain, future))
            if not sent:
                break
            try:
                _, late = await asyncio.wait([f for _, f in sent], timeout=self.publish_timeout)
            except asyncio.CancelledError:
                for _, pending in sent:
                    pending.cancel()
                raise
            going = []
            for chain, future in sent:
                if future in late or future.cancelled():
                    future.cancel()
                    errors.append(TimeoutError("no acknowledgement in time"))
                    continue
                refused = future.exception()
                if refused is not None:
                    errors.append(refused)
                    continue
                if future.result().duplicate:
                    self.duplicates += 1
                else:
                    self.published += 1
                if index + 1 < len(chain):
                    going.append(chain)
            index += 1
        self._fail_on(errors, f"of {len(chains)} tasks not fully published")

    async def _send(self, item: Outgoing) -> asyncio.Future[Any]:
        """Publishes one event; the future resolves to JetStream's acknowledgement."""
        future: asyncio.Future[Any] = await self.js.publish_async(
            item.subject, item.body, headers={MSG_ID: item.msg_id}
        )
        return future


# -- triggers -----------------------------------------------------------------------------------


class DueTriggers(Protocol):
    """What the scheduler needs of the projections."""

    def due_triggers(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Pending, unpublished triggers whose ``fire_at <= now``, earliest first."""
        ...

    def next_fire_at(self) -> float | None:
        """The earliest ``fire_at`` of the pending, unpublished triggers."""
        ...

    def mark_trigger_published(self, trigger_id: str) -> None:
        """Records durably that the trigger is published (a rebuild keeps it)."""
        ...

    def catch_up(self) -> int:
        """Applies the events the projections have not seen yet."""
        ...


class TriggerScheduler(_Pump):
    """Publishes each trigger when its ``fire_at`` comes to ``<prefix>.trigger.<session_id>``."""

    name = "trigger scheduler"
    min_interval = 0.005
    max_sleep: float = 0.25
    """The longest nap between two looks at the projections (triggers fire within 1 s)."""

    def __init__(
        self,
        projections: DueTriggers,
        js: Any,
        prefix: str = "baton",
        *,
        batch: int = 200,
        publish_timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.projections = projections
        self.js = js
        self.prefix = prefix
        self.batch = batch
        self.publish_timeout = publish_timeout
        self.clock = clock
        self.stream = stream_names(prefix)[1]
        self.published = 0
        """Triggers JetStream stored for this scheduler (since it was made)."""
        self.duplicates = 0
        """Triggers JetStream had already (published before a crash, not yet marked)."""

    def _due(self) -> list[dict[str, Any]]:
        # IntegrityError: someone else caught the projections up meanwhile; they are fresh.
        with contextlib.suppress(IntegrityError):
            self.projections.catch_up()
        return self.projections.due_triggers(self.clock(), self.batch)

    async def pump_once(self) -> int:
        """Publishes the triggers due now and marks them; returns how many JetStream acknowledged.
        Raises ``PublicationError`` after marking the acknowledged ones if some were not."""
        due = await self._in_thread(self._due)
        if not due:
            return 0
        if self._streams_missing:
            await ensure_streams(self.js, self.prefix)
            self._streams_missing = False
        results = await asyncio.gather(*(self._publish(t) for t in due), return_exceptions=True)
        acked = [t["trigger_id"] for t, r in zip(due, results, strict=True) if r is None]
        if acked:
            await self._in_thread(self._mark, acked)
        errors = [r for r in results if isinstance(r, BaseException)]
        self._fail_on(errors, f"of {len(due)} triggers not published")
        return len(acked)

    async def _pump_batch(self) -> bool:
        return await self.pump_once() >= self.batch

    def _mark(self, trigger_ids: list[str]) -> None:
        mark_all = getattr(self.projections, "mark_triggers_published", None)
        if mark_all is not None:  # one transaction for the whole batch
            mark_all(trigger_ids)
            return
        for trigger_id in trigger_ids:
            self.projections.mark_trigger_published(trigger_id)

    async def _publish(self, trigger: dict[str, Any]) -> None:
        ack = await self.js.publish(
            f"{self.prefix}.trigger.{trigger['session_id']}",
            encode(trigger),
            timeout=self.publish_timeout,
            headers={MSG_ID: trigger["trigger_id"]},
        )
        if ack.duplicate:
            self.duplicates += 1
        else:
            self.published += 1

    async def _idle_timeout(self) -> float:
        try:
            next_at = await self._in_thread(self.projections.next_fire_at)
        except Exception as error:  # the store is down: look again soon
            log.debug("%s: next_fire_at failed: %r", self.name, error)
            return self.max_sleep
        if next_at is None:
            return self.max_sleep
        return min(self.max_sleep, max(0.0, next_at - self.clock()))


__all__ = [
    "DUPLICATE_WINDOW_S",
    "DueTriggers",
    "Outgoing",
    "ProgressRelay",
    "PublicationError",
    "TriggerScheduler",
    "encode",
    "ensure_streams",
    "stream_configs",
    "stream_names",
]
