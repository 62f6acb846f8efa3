"""The progress relay: every Task event of the notification log to ``<prefix>.progress.<task>``.

An outbox relay. It reads the application's notification log from a position it tracks in the
event store itself (an eventsourcing tracking recorder, application name
``progress-relay:<prefix>``) and records a position only after JetStream acknowledged every event
up to it. The events of one task are published one after the other, each only after the previous
one was acknowledged; different tasks are published concurrently. So a message lost on a broken
connection can never be overtaken by a later event of the same task, even when two relays (two
instances on one PostgreSQL database) publish the same log at once.

No single event can stall the relay: one whose message would exceed the server's
``max_payload`` is published in a form that fits (its type, version, task, step and display
message, its data replaced by a note pointing at the task's history), and logged as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import nats.errors
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import IntegrityError, Notification, Tracking, TrackingRecorder

from baton.adapters.publication.pump import BUSY_INTERVAL_S, MSG_ID, Pump, encode
from baton.adapters.publication.streams import StreamPolicy, ensure_streams, stream_names
from baton.adapters.streamids import NATURAL, MessageIds
from baton.domain import codec
from baton.domain.model import Task
from baton.domain.services import BatonApp
from baton.domain.views import history_entry

log = logging.getLogger("baton.adapters.publication")

#: Bytes of a message's budget kept for its headers (``Nats-Msg-Id`` and the protocol's own):
#: the server counts headers and payload against ``max_payload``, the client only the payload.
HEADER_ROOM = 512

#: How often a round of publications looks whether its connection was replaced meanwhile.
ROUND_CHECK_S = 0.1

#: nats-server's default ``max_payload``, for a connection that has not said otherwise.
DEFAULT_MAX_PAYLOAD = 1024 * 1024


def max_payload_of(js: Any) -> Callable[[], int]:
    """Reads the ``max_payload`` the server announced to ``js``'s connection (its INFO; read
    again on each call, so a reconnection to another server is followed)."""

    def read() -> int:
        nc = getattr(js, "_nc", None)
        value = getattr(nc, "max_payload", None)
        return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_PAYLOAD

    return read


def fitting_entry(entry: dict[str, Any], size: int, limit: int, prefix: str) -> dict[str, Any]:
    """A history entry too big for one message, as one that fits: everything but its data,
    with a note saying where the data is (the task's history)."""
    slim = {k: v for k, v in entry.items() if k != "data"}
    slim["data"] = {}
    slim["data_omitted"] = {
        "bytes": size,
        "max_payload": limit,
        "message": (
            f"this event's data does not fit in a message ({size} bytes, more than the "
            f"server's max_payload allows); read it with {prefix}.query.history"
        ),
    }
    text = slim.get("display_message")
    if isinstance(text, str) and len(text) > 4096:
        slim["display_message"] = text[:4096] + "…"
    return slim


def relay_tracking_name(prefix: str) -> str:
    """The application name the relay of ``prefix`` tracks its position under."""
    return f"progress-relay:{prefix}"


def backlog_reader(app: BatonApp, prefix: str) -> Callable[[], int]:
    """Notifications stored but not yet published, read from the store (for a process that
    does not run the relay itself: the service beside its publisher process)."""
    tracking = app.factory.tracking_recorder()
    name = relay_tracking_name(prefix)

    def backlog() -> int:
        stored = app.recorder.max_notification_id() or 0
        return max(0, stored - (tracking.max_tracking_id(name) or 0))

    return backlog


@dataclass(frozen=True)
class Outgoing:
    """One task event, ready to publish."""

    notification_id: int
    aggregate_id: UUID
    version: int
    subject: str
    body: bytes
    msg_id: str
    """``<aggregate id>:<version>``, keyed by the deployment's secret (``streamids``)."""


class ProgressRelay(Pump):
    """Publishes every Task event of the notification log to ``<prefix>.progress.<task_id>``.

    An outbox relay: its position in the log is tracked in the event store (same database), and
    recorded only after JetStream acknowledged every event up to it. With ``record_interval``
    (the service's wiring passes one, ``baton.adapters.background``) it is recorded at most
    that often and when the relay stops: each record is a write to the store, and on SQLite a
    write made beside the service's own commits makes them wait for the file's lock (measured:
    +1-2 ms on a single command's reply). What a crash then loses is only the record, not a
    publication: the next relay publishes those events again under the same message ids and
    JetStream drops them as duplicates (the duplicate window is an hour).
    """

    name = "progress relay"
    min_interval = BUSY_INTERVAL_S
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
        max_payload: Callable[[], int] | None = None,
        policy: StreamPolicy | None = None,
        ids: MessageIds = NATURAL,
        record_interval: float = 0.0,
    ) -> None:
        super().__init__()
        self.record_interval = record_interval
        """The shortest time between two records of the position (seconds; 0: after every
        batch)."""
        self.ids = ids
        """Makes each message's ``Nats-Msg-Id`` (the service passes the deployment's keyed
        ids, so clients cannot pre-publish a message with the id of a future event)."""
        self.policy = policy
        """The stream settings to re-create a missing stream with."""
        self.app = app
        self.js = js
        self.prefix = prefix
        self.batch = batch
        self.publish_timeout = publish_timeout
        self.max_payload = max_payload or max_payload_of(js)
        """The server's ``max_payload`` now (read on each batch, so a reconnection to a server
        with another limit is followed)."""
        self.stream = stream_names(prefix)[0]
        self.tracking_name = relay_tracking_name(prefix)
        """The application name the position is tracked under."""
        self._tracking = tracking
        self._position: int | None = None
        """Every event up to here is acknowledged by JetStream."""
        self._recorded: int | None = None
        """... and up to here that is recorded in the store."""
        self._recorded_at = -float("inf")
        self._task_ids: OrderedDict[UUID, str] = OrderedDict()
        self.published = 0
        """Events JetStream stored for this relay (since it was made)."""
        self.duplicates = 0
        """Events JetStream had already (a republished batch, or another relay's)."""
        self.shortened = 0
        """Events published without their data because they did not fit in a message."""

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

    def backlog(self) -> int:
        """Notifications stored but not yet published (as far as this relay knows)."""
        stored = self.app.recorder.max_notification_id() or 0
        position = self._position if self._position is not None else self.read_position()
        return max(0, stored - position)

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
        limit = self.max_payload() - HEADER_ROOM
        return notifications[-1].id, [
            self._outgoing(n, limit) for n in notifications if n.topic.startswith(self._task_topic)
        ]

    def _outgoing(self, notification: Notification, limit: int) -> Outgoing:
        event = cast(CanMutateAggregate[UUID], self.app.decoded(notification))
        task_id = self._task_id_of(event)
        body = self.app.history_json(task_id, event)  # the history view's entry, as stored
        if len(body) > limit:
            body = self._shorten(history_entry(task_id, event), len(body), limit)
        return Outgoing(
            notification_id=notification.id,
            aggregate_id=event.originator_id,
            version=event.originator_version,
            subject=f"{self.prefix}.progress.{task_id}",
            body=body,
            msg_id=self.ids(f"{event.originator_id}:{event.originator_version}"),
        )

    def _shorten(self, entry: dict[str, Any], size: int, limit: int) -> bytes:
        """The message of an event too big for the server, in a form that fits; said loudly."""
        self.shortened += 1
        log.error(
            "%s: event %s v%s of task %s is %d bytes, over the %d a message may carry; "
            "publishing it without its data (the history has it)",
            self.name,
            entry.get("type"),
            entry.get("version"),
            entry.get("task_id"),
            size,
            limit,
        )
        return encode(fitting_entry(entry, size, limit + HEADER_ROOM, self.prefix))

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
            await self.record_position()
            return 0
        if self._streams_missing:
            await ensure_streams(self.js, self.prefix, self.policy)
            self._streams_missing = False
        await self.publish(items)
        self._position = last_id
        await self.record_position()
        return len(items)

    async def record_position(self, *, now: bool = False) -> None:
        """Records the acknowledged position if it is not yet and the last record is at least
        ``record_interval`` old (or ``now``)."""
        position = self._position
        if position is None or position == self._recorded:
            return
        clock = time.monotonic()
        if not now and clock - self._recorded_at < self.record_interval:
            return
        self._recorded_at = clock
        recorded = await self._in_thread(self._record, position)
        self._recorded = recorded
        if recorded > position:  # another relay on the same store is further along
            self._position = recorded

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await super().run(stop)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.record_position(now=True), 2.0)

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
                late = await self._acknowledged([f for _, f in sent])
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

    async def _acknowledged(self, futures: list[asyncio.Future[Any]]) -> set[asyncio.Future[Any]]:
        """Waits for the acknowledgements of a round; returns the futures still without one
        after ``publish_timeout``, or as soon as the connection was re-established (the acks of
        messages sent on the lost connection never come: no use waiting out the timeout; the
        next pump republishes them, and JetStream drops any it had stored as duplicates)."""
        nc = getattr(self.js, "_nc", None)
        stats = getattr(nc, "stats", None)
        reconnects = stats.get("reconnects") if isinstance(stats, dict) else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        pending = set(futures)
        while pending:
            left = deadline - loop.time()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, ROUND_CHECK_S))
            if reconnects is not None and stats is not None and stats["reconnects"] != reconnects:
                break
        return pending

    async def _send(self, item: Outgoing) -> asyncio.Future[Any]:
        """Publishes one event; the future resolves to JetStream's acknowledgement. An event
        the client finds too big (the server's limit shrank since the batch was read) goes out
        shortened."""
        try:
            return await self._publish(item.subject, item.body, item.msg_id)
        except nats.errors.MaxPayloadError:
            entry = codec.loads(item.body)
            limit = self.max_payload() - HEADER_ROOM
            body = self._shorten(entry, len(item.body), limit)
            return await self._publish(item.subject, body, item.msg_id)

    async def _publish(self, subject: str, body: bytes, msg_id: str) -> asyncio.Future[Any]:
        return await self.publish_acked(subject, body, {MSG_ID: msg_id})


__all__ = ["HEADER_ROOM", "Outgoing", "ProgressRelay", "fitting_entry", "max_payload_of"]
