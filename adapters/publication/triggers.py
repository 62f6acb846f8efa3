"""The trigger scheduler: each trigger when its ``fire_at`` comes, to
``<prefix>.trigger.<session_id>``.

It asks the projections for due triggers, publishes each and marks it published in the
projections (a mark a rebuild never drops). A withdrawn or replaced trigger leaves the pending
table, so it is never published. (The projections are caught up right before each look, so only
a withdrawal committed in the few milliseconds between that look and the publication of a
trigger already due can lose the race; the trigger had fired by then.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import nats.js.errors
from eventsourcing.persistence import IntegrityError

from baton.adapters.publication.progress import HEADER_ROOM, max_payload_of
from baton.adapters.publication.pump import BUSY_INTERVAL_S, MSG_ID, Pump, encode
from baton.adapters.publication.streams import StreamPolicy, ensure_streams, stream_names
from baton.adapters.streamids import NATURAL, MessageIds

log = logging.getLogger("baton.adapters.publication")


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


def fitting_trigger(trigger: dict[str, Any], limit: int) -> bytes:
    """The message of a trigger; one too big for the server keeps its ids, times and priority
    and a cut ``next_action_description`` (the step in ``query.task`` has it whole)."""
    body = encode(trigger)
    if len(body) <= limit:
        return body
    log.error(
        "trigger %s is %d bytes, over the %d a message may carry; publishing it shortened",
        trigger.get("trigger_id"),
        len(body),
        limit,
    )
    slim = dict(trigger)
    payload = slim.get("payload")
    if isinstance(payload, dict):
        slim["payload"] = {"parent_action_id": payload.get("parent_action_id")}
    text = str(slim.get("next_action_description") or "")
    slim["next_action_description"] = text[: max(0, limit // 4)]
    slim["truncated"] = True
    return encode(slim)


#: JetStream's per-subject optimistic concurrency header: the message is stored only if the
#: subject's last message in the stream has this sequence (0: none). Each trigger is published
#: with the sequence the session's subject had (as far as the scheduler knew: from its own last
#: acknowledgement there, or from the stream's last refusal) when it decided to publish it, so a
#: trigger whose publication was delayed (a slow instance, or a message buffered in the client
#: across a reconnection and flushed seconds later) can never land after a newer trigger of the
#: session that another instance published meanwhile: the stream refuses it (``stale``), and
#: the next look at the projections decides again (a replaced trigger is no longer due).
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
#: JetStream's error code for a wrong expected last (subject) sequence.
WRONG_LAST_SEQUENCE = 10071
#: Sessions whose last trigger sequence the scheduler remembers (one refusal each otherwise).
LAST_SEQ_CACHE = 10_000


class TriggerScheduler(Pump):
    """Publishes each trigger when its ``fire_at`` comes to ``<prefix>.trigger.<session_id>``."""

    name = "trigger scheduler"
    min_interval = BUSY_INTERVAL_S
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
        max_payload: Callable[[], int] | None = None,
        ids: MessageIds = NATURAL,
        policy: StreamPolicy | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        """The stream settings to re-create a missing stream with."""
        self.projections = projections
        self.js = js
        self.prefix = prefix
        self.batch = batch
        self.publish_timeout = publish_timeout
        self.clock = clock
        self.max_payload = max_payload or max_payload_of(js)
        self.ids = ids
        """Makes each trigger's ``Nats-Msg-Id`` from its ``trigger_id`` (keyed by the
        deployment's secret in the service: ``query.queue`` lists trigger ids)."""
        self.stream = stream_names(prefix)[1]
        self.published = 0
        """Triggers JetStream stored for this scheduler (since it was made)."""
        self.duplicates = 0
        """Triggers JetStream had already (published before a crash, not yet marked)."""
        self.stale = 0
        """Publications the stream refused because the session's subject moved on meanwhile
        (another instance published a newer trigger): looked at again at once."""
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        """Subject -> the stream sequence of its last message, as this scheduler last saw it."""

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
            await ensure_streams(self.js, self.prefix, self.policy)
            self._streams_missing = False
        results: list[bool | BaseException] = list(
            await asyncio.gather(*(self._publish(t) for t in due), return_exceptions=True)
        )
        refused = {t["trigger_id"] for t, r in zip(due, results, strict=True) if r is False}
        if refused:
            # The stream said the sessions' sequences: decide again on a fresh look (a refused
            # trigger still due now goes out on the sequence learnt; a replaced one is gone).
            again = [t for t in await self._in_thread(self._due) if t["trigger_id"] in refused]
            kept: list[tuple[dict[str, Any], bool | BaseException]] = [
                (t, r) for t, r in zip(due, results, strict=True) if r is not False
            ]
            retried: list[bool | BaseException] = list(
                await asyncio.gather(*(self._publish(t) for t in again), return_exceptions=True)
            )
            due = [t for t, _ in kept] + again
            results = [r for _, r in kept] + retried
        acked = [t["trigger_id"] for t, r in zip(due, results, strict=True) if r is True]
        if acked:
            await self._in_thread(self._mark, acked)
        if any(r is False for r in results):
            self.wake()  # look again now: withdrawn by now, or due on a fresh sequence
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

    async def _publish(self, trigger: dict[str, Any]) -> bool:
        """Publishes one trigger; True once JetStream acknowledged it, False when the stream
        refused it as stale (see ``EXPECTED_LAST``)."""
        subject = self._subject(trigger)
        # A session this scheduler knows nothing of is taken to have no trigger in the stream
        # (true of a new session): if that is wrong, the stream refuses and says its sequence.
        last = self._last_seq.get(subject, 0)
        body = fitting_trigger(trigger, self.max_payload() - HEADER_ROOM)
        headers = {MSG_ID: self.ids(trigger["trigger_id"]), EXPECTED_LAST: str(last)}
        try:
            acked = await self.publish_acked(subject, body, headers)
            ack = await asyncio.wait_for(acked, self.publish_timeout)
        except nats.js.errors.BadRequestError as refused:
            self._last_seq.pop(subject, None)
            if refused.err_code != WRONG_LAST_SEQUENCE:
                raise
            # Learnt now, before the next look at the projections decides again: a newer
            # trigger stored up to now means this one was withdrawn before that look.
            found = re.search(r"(\d+)\s*$", refused.description or "")
            seq = int(found.group(1)) if found else await self._read_last_seq(subject)
            self._remember(subject, seq)
            self.stale += 1
            return False
        if ack.duplicate:  # stored long ago: its sequence says nothing of the subject's last
            self._last_seq.pop(subject, None)
            self.duplicates += 1
        else:
            self._remember(subject, ack.seq)
            self.published += 1
        return True

    def _subject(self, trigger: dict[str, Any]) -> str:
        return f"{self.prefix}.trigger.{trigger['session_id']}"

    async def _read_last_seq(self, subject: str) -> int:
        try:
            msg = await self.js.get_last_msg(self.stream, subject)
        except nats.js.errors.NotFoundError:
            return 0  # nothing on the subject (never, or removed by age or consumption)
        return int(msg.seq)

    def _remember(self, subject: str, seq: int | None) -> None:
        if seq is None:
            return
        self._last_seq[subject] = seq
        self._last_seq.move_to_end(subject)
        while len(self._last_seq) > LAST_SEQ_CACHE:
            self._last_seq.popitem(last=False)

    async def _idle_timeout(self) -> float:
        try:
            next_at = await self._in_thread(self.projections.next_fire_at)
        except Exception as error:  # the store is down: look again soon
            log.debug("%s: next_fire_at failed: %r", self.name, error)
            return self.max_sleep
        if next_at is None:
            return self.max_sleep
        return min(self.max_sleep, max(0.0, next_at - self.clock()))


__all__ = ["DueTriggers", "TriggerScheduler", "fitting_trigger"]
