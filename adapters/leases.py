"""The lease keeper: finds claims whose lease ran out and hands their steps out again.

Like the trigger scheduler it works from the views (``baton_claim_leases``, ordered by expiry)
and acts through the application: each lapsed claim becomes an ``ExpireClaim`` command, which
appends ``ClaimExpired`` only while that claim still holds its step and its lease has run out.
So a lapse is recorded exactly once, however many instances sweep at the same moment (the
losers of the race find the claim gone and append nothing), and after a restart the views
still list every claim that is due.

It also keeps storage bounded: command records older than the idempotency window and
published-trigger marks that can no longer matter are pruned, at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from baton.adapters.persistence import delete_command_records
from baton.domain import commands as c
from baton.domain.errors import BatonError
from baton.domain.services import BatonApp
from baton.projections import Projections

log = logging.getLogger(__name__)

#: Longest wait between two sweeps (a claim lapses at most this late, plus the sweep's time).
SWEEP_INTERVAL_S = 0.5
PRUNE_INTERVAL_S = 60.0


class LeaseKeeper:
    def __init__(
        self,
        app: BatonApp,
        views: Projections,
        in_thread: Callable[..., Awaitable[Any]],
        *,
        idempotency_window_s: float = 86_400.0,
        catch_up: bool = True,
    ) -> None:
        self.app = app
        self.catch_up = catch_up
        """Whether a sweep first brings the views up itself (off beside a publisher process,
        which keeps them current: a lapse is then seen a few milliseconds later, and the
        service's process does not project what the other one projects anyway)."""
        self.views = views
        self.in_thread = in_thread
        self.idempotency_window_s = idempotency_window_s
        self.expired = 0
        self._pruned_at = 0.0

    def lapsing(self, within_s: float = 60.0) -> int:
        """How many held claims run out within ``within_s`` (for the operator's view)."""
        return len(self.views.lapsed_claims(self.app.clock() + within_s, 10_000))

    def sweep(self) -> int:
        """Expires every lapsed claim the views know of; returns how many it expired."""
        if self.catch_up:
            self.views.catch_up()
        expired = 0
        for lapsed in self.views.lapsed_claims(self.app.clock(), 100):
            try:
                reply = self.app.handle(c.ExpireClaim(**lapsed))
            except BatonError as error:  # the task or step is gone from under it: nothing due
                log.debug("lease keeper: %s", error)
                continue
            if reply["expired"]:
                expired += 1
                log.info(
                    "claim %s of %s lapsed; the step is handed out again",
                    lapsed["claim_id"],
                    lapsed["step_id"],
                )
        self.expired += expired
        if expired and self.catch_up:
            self.views.catch_up()
        return expired

    def prune(self) -> None:
        now = time.time()
        interval = min(PRUNE_INTERVAL_S, max(1.0, self.idempotency_window_s / 4))
        if now - self._pruned_at < interval:
            return
        self._pruned_at = now
        position = self.app.recorder.max_notification_id() or 0
        cutoff = self.views.prune_mark(now, position, self.idempotency_window_s)
        pruned = 0 if cutoff is None else delete_command_records(self.app.recorder, cutoff)
        marks = self.views.prune_published(now - self.idempotency_window_s)
        if pruned or marks:
            log.info("pruned %d command records and %d published-trigger marks", pruned, marks)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.in_thread(self.sweep)
                await self.in_thread(self.prune)
                next_at = await self.in_thread(self.views.next_lapse_at)
            except Exception:
                log.exception("lease keeper: sweep failed; retrying")
                next_at = None
            wait = SWEEP_INTERVAL_S
            if next_at is not None:
                wait = max(0.02, min(wait, next_at - self.app.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
