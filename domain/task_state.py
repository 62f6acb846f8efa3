"""The Task's state and the indexes derived from it, so every transition costs the same at 10
steps or 1,000.

The stored state of a task is its fields and its steps. Everything else here is derived, kept
up to date by the events' ``apply`` (through ``_set_status`` and friends) and rebuilt by
``_index()`` when a task is loaded from a snapshot: steps by id and name, the dependents of each
name, the count of each step's unsatisfied dependencies, the claimable steps in plan order,
the current steps, counts by status. None of it is ever stored (snapshots drop it).

Satisfied: in a dependency graph a dependency is satisfied once it is completed or skipped. In a
sequential plan (no ``depends_on`` given, each step after the one before) a step waits for
every earlier step to be completed, skipped or cancelled: a dependency is satisfied once it is
done *and* its own dependencies are, so skipping a pending middle step does not release the
step after it while an earlier one is still current.
"""

from __future__ import annotations

from typing import Any, Final

from baton.domain.errors import NotFound
from baton.domain.lifecycle import STEP_FINISHED, STEP_SATISFIED
from baton.domain.steps import (
    CURRENT,
    PENDING,
    IndexHeap,
    Step,
)

_GRAPH_SATISFYING: Final = frozenset(s.value for s in STEP_SATISFIED)
#: Finished: what a sequential plan's later steps wait for, and what completes a task.
DONE: Final = frozenset(s.value for s in STEP_FINISHED)
_SEQUENTIAL_SATISFYING: Final = DONE

#: Attributes derived from the steps; never stored in a snapshot.
DERIVED: Final = frozenset(
    {
        "_by_id",
        "_by_name",
        "_dependents",
        "_unsat",
        "_satisfied",
        "_ready",
        "_open",
        "_waiting",
        "_current",
        "_counts",
        "_dirty",
        "_dirty_all",
        "_context_dirty",
        "_view_bytes",
    }
)


class TaskState:
    """Steps, their indexes, and the readers every command and view uses."""

    task_id: str
    status: str
    sequential: bool
    steps: list[Step]
    trigger: dict[str, Any] | None
    last_trigger: dict[str, Any] | None

    # -- indexes --------------------------------------------------------------------------
    def _index(self) -> None:
        """(Re)builds every derived index from the steps, in O(steps + dependencies)."""
        self._by_id: dict[str, Step] = {}
        self._by_name: dict[str, Step] = {}
        self._dependents: dict[str, list[Step]] = {}
        self._unsat: dict[str, int] = {}
        self._satisfied: set[str] = set()
        self._ready = IndexHeap()
        self._open = IndexHeap()
        self._waiting: dict[int, float] = {}
        self._current: dict[int, Step] = {}
        self._counts: dict[str, int] = {}
        #: What changed since the read side last wrote this task: step indexes (their rows),
        #: every step, the context. The command side never reads these.
        self._dirty: set[int] = set()
        self._dirty_all = True
        self._context_dirty = True
        #: An upper bound of the size of the task's view in bytes (None: not known yet).
        self._view_bytes: int | None = None
        for step in self.steps:
            self._by_id[step.step_id] = step
            self._by_name[step.step_name] = step
            self._counts[step.status] = self._counts.get(step.status, 0) + 1
            if step.status == CURRENT:
                self._current[step.step_index] = step
        for step in self.steps:
            self._link(step)
        # Satisfaction in dependency order (plans are acyclic): a step's dependencies are
        # decided before it, whatever the order of the list.
        for step in self.steps:
            self._settle(step)
        for step in self.steps:
            self._place(step)

    def _link(self, step: Step) -> None:
        """Counts ``step``'s unsatisfied dependencies and registers it as their dependent."""
        unsat = 0
        for name in step.depends_on:
            self._dependents.setdefault(name, []).append(step)
            if name in self._by_name and name not in self._satisfied:
                unsat += 1
        self._unsat[step.step_id] = unsat

    def _unlink(self, step: Step) -> None:
        for name in step.depends_on:
            dependents = self._dependents.get(name)
            if dependents is not None and step in dependents:
                dependents.remove(step)

    def _satisfying(self, step: Step) -> bool:
        if self.sequential:
            return step.status in _SEQUENTIAL_SATISFYING and self._unsat[step.step_id] == 0
        return step.status in _GRAPH_SATISFYING

    def _settle(self, step: Step) -> None:
        """Marks ``step`` satisfied if it now is, releasing its dependents (and, in a
        sequential plan, dependents that were only waiting on it), each step once."""
        stack = [step]
        while stack:
            item = stack.pop()
            name = item.step_name
            if name in self._satisfied or not self._satisfying(item):
                continue
            self._satisfied.add(name)
            for dependent in self._dependents.get(name, ()):
                self._dirty.add(dependent.step_index)  # its context and blocked flag
                left = self._unsat[dependent.step_id] - 1
                self._unsat[dependent.step_id] = left
                if left == 0:
                    self._place(dependent)
                    if self.sequential:
                        stack.append(dependent)

    def _place(self, step: Step) -> None:
        """Puts ``step`` in or out of the ready, open (current, unclaimed) and waiting sets."""
        index = step.step_index
        self._dirty.add(index)
        status = step.status
        if status == PENDING and self._unsat[step.step_id] == 0:
            if step.retry_at is None:
                self._ready.add(index)
                self._waiting.pop(index, None)
            else:
                self._ready.discard(index)
                self._waiting[index] = step.retry_at
        else:
            self._ready.discard(index)
            self._waiting.pop(index, None)
        if status == CURRENT and step.claimed_by is None:
            self._open.add(index)
        else:
            self._open.discard(index)

    def _set_status(self, step: Step, status: str) -> None:
        old = step.status
        if old != status:
            counts = self._counts
            counts[old] -= 1
            counts[status] = counts.get(status, 0) + 1
            step.status = status
            if old == CURRENT:
                del self._current[step.step_index]
            if status == CURRENT:
                self._current[step.step_index] = step
        self._place(step)
        self._settle(step)

    def _add_steps(self, steps: list[Step]) -> None:
        """Appends new (pending) steps; every name is known before any is linked, since a new
        step may depend on one listed after it."""
        for step in steps:
            self.steps.append(step)
            self._by_id[step.step_id] = step
            self._by_name[step.step_name] = step
            self._counts[step.status] = self._counts.get(step.status, 0) + 1
        for step in steps:
            self._link(step)
        for step in steps:
            self._place(step)

    def _relink(self, step: Step, depends_on: list[str]) -> None:
        self._unlink(step)
        step.depends_on = list(depends_on)
        self._link(step)
        self._place(step)

    def _leave(self, step: Step, status: str) -> None:
        """``step`` leaves its claim (if any) and its trigger behind, for ``status``."""
        step.claim_id = None
        step.lease_expires_at = None
        self._drop_trigger_of(step)
        self._set_status(step, status)

    def _drop_trigger_of(self, step: Step) -> None:
        """A step that stops being current takes its pending trigger with it."""
        if self.trigger is not None and self.trigger.get("step_id") == step.step_id:
            self.trigger = None
            self._dirty.add(step.step_index)

    def _set_trigger(self, trigger: dict[str, Any] | None) -> None:
        """Replaces the pending trigger (None withdraws it); a new one is also the last one.
        The steps of the old and the new one rank by their trigger: their queue rows change."""
        old = self.trigger
        self.trigger = None if trigger is None else dict(trigger)
        if self.trigger is not None:
            self.last_trigger = self.trigger
        for trigger in (old, self.trigger):
            if trigger is not None:
                step = self._by_id.get(trigger.get("step_id", ""))
                if step is not None:
                    self._dirty.add(step.step_index)

    def take_changes(self) -> tuple[set[int] | None, bool]:
        """The changed step indexes (None: every step) and whether the context changed,
        since the last call (the read side's)."""
        changed = None if self._dirty_all else self._dirty
        context = self._context_dirty
        self._dirty = set()
        self._dirty_all = False
        self._context_dirty = False
        return changed, context

    # -- readers --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.status == "running"

    def step(self, step_id: str) -> Step:
        try:
            return self._by_id[step_id]
        except KeyError:
            raise NotFound(f"task {self.task_id!r} has no step {step_id!r}") from None

    def step_named(self, name: str) -> Step | None:
        return self._by_name.get(name)

    def dependencies_satisfied(self, step: Step) -> bool:
        return self._unsat[step.step_id] == 0

    def unsatisfied(self, step: Step) -> list[str]:
        return [d for d in step.depends_on if d in self._by_name and d not in self._satisfied]

    def dependents_of(self, name: str) -> list[Step]:
        return list(self._dependents.get(name, ()))

    def is_ready(self, step: Step, now: float | None = None) -> bool:
        """A pending step of a running task whose dependencies are satisfied (and whose retry
        delay, if any, is over at ``now``; without ``now`` a waiting step is not ready)."""
        if not (self.running and step.status == PENDING and self._unsat[step.step_id] == 0):
            return False
        return step.retry_at is None or (now is not None and step.retry_at <= now)

    def current_steps(self) -> list[Step]:
        return [self._current[i] for i in sorted(self._current)]

    def first_current(self) -> Step | None:
        return self._current[min(self._current)] if self._current else None

    def count(self, status: str) -> int:
        return self._counts.get(status, 0)

    def all_steps_finished(self) -> bool:
        return sum(self._counts.get(s, 0) for s in DONE) == len(self.steps)

    def _first_waiting(self, now: float) -> int | None:
        """The first step in plan order whose retry delay is over at ``now``."""
        due = [i for i, at in self._waiting.items() if at <= now]
        return min(due) if due else None

    def first_ready(self, now: float) -> Step | None:
        """The first ready (pending, startable) step in plan order."""
        if not self.running:
            return None
        candidates = [i for i in (self._ready.first(), self._first_waiting(now)) if i is not None]
        return self.steps[min(candidates)] if candidates else None

    def first_claimable(self, now: float) -> Step | None:
        """The first claimable step in plan order: current and unclaimed, or ready."""
        if not self.running:
            return None
        ready = self.first_ready(now)
        open_index = self._open.first()
        if open_index is not None and (ready is None or open_index < ready.step_index):
            return self.steps[open_index]
        return ready

    def holds_claimable(self, step: Step) -> bool:
        """Claimable now or once its retry delay is over: current and unclaimed, or pending
        with its dependencies satisfied (the queue's rows; a claim checks the time)."""
        index = step.step_index
        return index in self._open or index in self._ready or index in self._waiting
