"""The queries of the contract, answered from the view tables.

Every reply fits in one NATS message: a task view is bounded by the commands that built it
(each refused what would outgrow a message), and the pages (``tasks``, ``queue``, ``history``)
are cut by bytes as well as by count, with a ``cursor`` to go on from.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from baton.domain import codec
from baton.domain.errors import InvalidRequest, NotFound
from baton.domain.views import task_view
from baton.projections.store import TABLES, ViewStore

if TYPE_CHECKING:
    from baton.domain.services import BatonApp

_URGENCY = "priority, fire_at, created_at, task_id, step_index"
#: Sessions named ``_...`` are private: only a query or claim naming them (or their tasks)
#: sees their steps and triggers (the harness runs in one, so real workers never get its steps).
_PUBLIC = "substr(session_id, 1, 1) <> '_' "
#: Largest integer a cursor may hold (SQLite and PostgreSQL integers are 64-bit).
_MAX_CURSOR = 2**63 - 1
#: A page's room when the application knows no message limit (not connected to NATS).
_DEFAULT_PAGE_BYTES = 1024 * 1024 - 4096


def _loads(text: str) -> Any:
    return codec.loads(text)


class _Page:
    """Items of a reply page, cut when the next one would pass the byte budget (at least one
    item goes in, so a page always moves on)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.items: list[Any] = []
        self.full = False

    def add(self, text: str) -> bool:
        size = len(text.encode()) + 1
        if self.items and self.used + size > self.budget:
            self.full = True
            return False
        self.used += size
        self.items.append(_loads(text))
        return True


def _int_cursor(after: str | None, what: str) -> int:
    if after is None or after == "":
        return 0
    try:
        value = int(after)
    except ValueError:
        raise InvalidRequest(f"not a cursor of {what}: {after!r}") from None
    if not 0 <= value <= _MAX_CURSOR:
        raise InvalidRequest(f"not a cursor of {what}: {after!r}")
    return value


class ViewQueries:
    """The read queries over a ``ViewStore`` (mixed into ``Projections``)."""

    app: BatonApp
    store: ViewStore

    def page_bytes(self) -> int:
        """How many bytes of items a page may carry (the reply's envelope aside)."""
        limit = self.app.message_limit
        return (limit if limit is not None else _DEFAULT_PAGE_BYTES) - 1024

    # -- a task's view ---------------------------------------------------------------------
    def _view(self, cursor: Any, row: Any) -> dict[str, Any]:
        """The task view from its header row and step rows."""
        view: dict[str, Any] = _loads(row["header_json"])
        view["context"] = _loads(row["context_json"])
        cursor.execute(
            self.store.sql("SELECT step_json FROM {steps} WHERE task_id = ? ORDER BY step_index"),
            (row["task_id"],),
        )
        steps = [_loads(r["step_json"]) for r in cursor.fetchall()]
        now = time.time()
        running = view["status"] == "running"
        for step in steps:
            retry_at = step.get("retry_at")
            if retry_at is not None and running and not step["blocked"] and retry_at <= now:
                step["ready"] = True
        view["steps"] = steps
        if row["trigger_json"] is not None:
            view["trigger"] = _loads(row["trigger_json"])
        current = row["current_index"]
        if current is not None and 0 <= current < len(steps):
            view["current_step"] = steps[current]
        return view

    _TASK_COLUMNS = "task_id, header_json, context_json, trigger_json, current_index"

    def active(self, session_id: str) -> dict[str, Any] | None:
        """The session's running task view, or None."""
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql(
                    f"SELECT {self._TASK_COLUMNS} FROM {{tasks}}"
                    " WHERE session_id = ? AND status = 'running' ORDER BY seq LIMIT 1"
                ),
                (session_id,),
            )
            row = cursor.fetchone()
            return None if row is None else self._view(cursor, row)

    def task(self, task_id: str) -> dict[str, Any]:
        """The task view; NotFound for an unknown task."""
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql(f"SELECT {self._TASK_COLUMNS} FROM {{tasks}} WHERE task_id = ?"),
                (task_id,),
            )
            row = cursor.fetchone()
            if row is None:
                raise NotFound(f"no task {task_id!r}")
            return self._view(cursor, row)

    # -- pages -----------------------------------------------------------------------------
    def tasks(
        self,
        status: str | None = None,
        session_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> dict[str, Any]:
        """``{tasks: [summary...], cursor}`` in creation order; ``cursor`` (None on the last
        page) passed as ``after`` gives the next page."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        where: list[str] = ["seq > ?"]
        params: list[Any] = [_int_cursor(after, "baton.query.tasks")]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        statement = (
            "SELECT seq, summary_json FROM {tasks} WHERE "
            + " AND ".join(where)
            + " ORDER BY seq LIMIT ?"
        )
        with self.store.read() as cursor:
            cursor.execute(self.store.sql(statement), (*params, limit + 1))
            found = cursor.fetchall()
        page = _Page(self.page_bytes())
        last = None
        for row in found[:limit]:
            if not page.add(row["summary_json"]):
                break
            last = row["seq"]
        more = page.full or len(found) > limit
        return {"tasks": page.items, "cursor": str(last) if more and last is not None else None}

    def queue(
        self, session_id: str | None = None, limit: int = 100, after: str | None = None
    ) -> dict[str, Any]:
        """``{steps, triggers, cursor}``: claimable steps of running tasks, most urgent first
        (priority, fire_at, age), and triggers not yet fired (priority, fire_at). ``cursor``
        (None on the last page), passed as ``after``, gives the next page of steps."""
        start = _int_cursor(after, "baton.query.queue")
        scope, params = (
            ("AND session_id = ? ", (session_id,)) if session_id else (f"AND {_PUBLIC}", ())
        )
        page = _Page(self.page_bytes())
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql(
                    f"SELECT step_json FROM {{ready}} WHERE ready_at <= ? {scope}"
                    f"ORDER BY {_URGENCY} LIMIT ? OFFSET ?"
                ),
                (time.time(), *params, limit + 1, start),
            )
            found = cursor.fetchall()
            for row in found[:limit]:
                if not page.add(row["step_json"]):
                    break
            steps = list(page.items)
            more = page.full or len(found) > limit
            triggers: list[Any] = []
            if not page.full:
                tscope = "AND session_id = ? " if session_id else f"AND {_PUBLIC}"
                cursor.execute(
                    self.store.sql(
                        f"SELECT trigger_json FROM {{triggers}} WHERE published = 0 {tscope}"
                        "ORDER BY priority, fire_at, trigger_id LIMIT ?"
                    ),
                    (*params, limit),
                )
                for row in cursor.fetchall():
                    if not page.add(row["trigger_json"]):
                        break
                triggers = page.items[len(steps) :]
        return {
            "steps": steps,
            "triggers": triggers,
            "cursor": str(start + len(steps)) if more else None,
        }

    def history(
        self,
        task_id: str,
        version: int | None = None,
        after: str | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """``{task_id, events, cursor}`` in order (``cursor``, passed as ``after``, gives the
        next page); with ``version``, ``{task_id, version, task}``: the task view as it was
        then (reconstructed from the store). NotFound for an unknown task or a version it
        never had."""
        if version is not None:
            if version < 1:
                raise NotFound(f"task {task_id!r} has no version {version}")
            task = self.app.get_task(task_id, version)
            return {"task_id": task_id, "version": version, "task": task_view(task)}
        start = _int_cursor(after, "baton.query.history")
        page = _Page(self.page_bytes())
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql("SELECT 1 AS found FROM {tasks} WHERE task_id = ?"), (task_id,)
            )
            if cursor.fetchone() is None:
                raise NotFound(f"no task {task_id!r}")
            cursor.execute(
                self.store.sql(
                    "SELECT version, entry_json FROM {history} WHERE task_id = ? AND version > ?"
                    " ORDER BY version LIMIT ?"
                ),
                (task_id, start, limit + 1),
            )
            found = cursor.fetchall()
        last = None
        for row in found[:limit]:
            if not page.add(row["entry_json"]):
                break
            last = row["version"]
        more = page.full or len(found) > limit
        return {
            "task_id": task_id,
            "events": page.items,
            "cursor": str(last) if more and last is not None else None,
        }

    # -- the trigger scheduler -------------------------------------------------------------
    def due_triggers(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Pending, unpublished triggers with ``fire_at <= now``, earliest first."""
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql(
                    "SELECT trigger_json FROM {triggers} WHERE published = 0 AND fire_at <= ?"
                    " ORDER BY fire_at, priority, trigger_id LIMIT ?"
                ),
                (now, limit),
            )
            return [_loads(row["trigger_json"]) for row in cursor.fetchall()]

    def next_fire_at(self) -> float | None:
        """The earliest ``fire_at`` of the pending, unpublished triggers, or None."""
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql("SELECT MIN(fire_at) AS fire_at FROM {triggers} WHERE published = 0")
            )
            row = cursor.fetchone()
        return None if row is None or row["fire_at"] is None else float(row["fire_at"])

    def mark_trigger_published(self, trigger_id: str) -> None:
        """Records durably that ``trigger_id`` went out; rebuilds keep the mark."""
        self.mark_triggers_published([trigger_id])

    def mark_triggers_published(self, trigger_ids: list[str]) -> None:
        """Records durably, in one transaction, that the triggers went out."""
        if not trigger_ids:
            return
        now = time.time()
        with self.store.write() as cursor:
            cursor.executemany(
                self.store.sql(
                    "INSERT INTO {published} (trigger_id, published_at) VALUES (?, ?)"
                    " ON CONFLICT (trigger_id) DO NOTHING"
                ),
                [(trigger_id, now) for trigger_id in trigger_ids],
            )
            cursor.executemany(
                self.store.sql("UPDATE {triggers} SET published = 1 WHERE trigger_id = ?"),
                [(trigger_id,) for trigger_id in trigger_ids],
            )

    def prune_published(self, older_than: float) -> int:
        """Forgets published-trigger marks older than ``older_than`` (epoch seconds) whose
        trigger is no longer pending (it can never be due again); returns how many."""
        where = (
            "FROM {published} WHERE published_at < ? AND trigger_id NOT IN"
            " (SELECT trigger_id FROM {triggers})"
        )
        with self.store.write() as cursor:
            cursor.execute(self.store.sql(f"SELECT COUNT(*) AS n {where}"), (older_than,))
            count = int(cursor.fetchone()["n"])
            if count:
                cursor.execute(self.store.sql(f"DELETE {where}"), (older_than,))
            return count

    def prune_mark(self, now: float, position: int, window_s: float) -> int | None:
        """Records that the log reached ``position`` at ``now``; returns the position the log
        had ``window_s`` ago (the newest older mark), or None, and forgets older marks."""
        with self.store.write() as cursor:
            cursor.execute(
                self.store.sql(
                    "INSERT INTO {marks} (at, position) VALUES (?, ?) ON CONFLICT (at) DO NOTHING"
                ),
                (now, position),
            )
            cursor.execute(
                self.store.sql("SELECT MAX(position) AS position FROM {marks} WHERE at <= ?"),
                (now - window_s,),
            )
            row = cursor.fetchone()
            cutoff = None if row is None or row["position"] is None else int(row["position"])
            if cutoff is not None:
                cursor.execute(
                    self.store.sql("DELETE FROM {marks} WHERE at < ? AND position < ?"),
                    (now - window_s, cutoff),
                )
        return cutoff

    # -- leases ----------------------------------------------------------------------------
    def lapsed_claims(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Claims whose lease ran out by ``now``: ``{task_id, step_id, claim_id}``."""
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql(
                    "SELECT task_id, step_id, claim_id FROM {leases} WHERE expires_at <= ?"
                    " ORDER BY expires_at LIMIT ?"
                ),
                (now, limit),
            )
            return [dict(row) for row in cursor.fetchall()]

    def lapsing_leases(self, now: float | None = None) -> int:
        """How many held claims have run out and are not handed out again yet (the operator's
        view: it stays near 0 while the lease keeper keeps up)."""
        with self.store.read() as cursor:
            cursor.execute(
                self.store.sql("SELECT COUNT(*) AS n FROM {leases} WHERE expires_at <= ?"),
                (time.time() if now is None else now,),
            )
            return int(cursor.fetchone()["n"])

    def next_lapse_at(self) -> float | None:
        """When the next lease runs out, or None."""
        with self.store.read() as cursor:
            cursor.execute(self.store.sql("SELECT MIN(expires_at) AS at FROM {leases}"))
            row = cursor.fetchone()
        return None if row is None or row["at"] is None else float(row["at"])

    # -- domain.services.ReadyWork ---------------------------------------------------------
    def candidate_tasks(self, session_id: str | None, limit: int) -> list[str]:
        """Task ids holding claimable steps now, most urgent first (private sessions only when
        named)."""
        scope, params = (
            ("AND session_id = ? ", (session_id,)) if session_id else (f"AND {_PUBLIC}", ())
        )
        statement = self.store.sql(
            f"SELECT task_id FROM {{ready}} WHERE ready_at <= ? {scope}"
            f"ORDER BY {_URGENCY} LIMIT ? OFFSET ?"
        )
        page = max(4 * limit, 64)
        found: dict[str, None] = {}
        offset = 0
        now = time.time()
        with self.store.read() as cursor:
            while len(found) < limit:
                cursor.execute(statement, (now, *params, page, offset))
                batch = cursor.fetchall()
                for row in batch:
                    found.setdefault(row["task_id"], None)
                if len(batch) < page:
                    break
                offset += page
        return list(found)[:limit]

    def idle_status(self, session_id: str | None) -> str:
        """``failed`` (a running task has a failed step), ``blocked`` (a running task has
        pending or current steps, or a task is queued) or ``done``."""
        with self.store.read() as cursor:
            if session_id:
                cursor.execute(
                    self.store.sql(
                        "SELECT status, has_failed, has_open FROM {tasks}"
                        " WHERE session_id = ? AND status IN ('running', 'queued')"
                    ),
                    (session_id,),
                )
                live = [(r["status"], r["has_failed"], r["has_open"]) for r in cursor.fetchall()]
                if any(status == "running" and failed for status, failed, _ in live):
                    return "failed"
                if any(status == "queued" or open_ for status, _, open_ in live):
                    return "blocked"
                return "done"
            for status, condition in (
                ("failed", "status = 'running' AND has_failed = 1"),
                ("blocked", "status = 'running' AND has_open = 1"),
                ("blocked", "status = 'queued'"),
            ):
                cursor.execute(
                    self.store.sql(
                        f"SELECT 1 AS found FROM {{tasks}} WHERE {condition} AND {_PUBLIC}LIMIT 1"
                    )
                )
                if cursor.fetchone() is not None:
                    return status
        return "done"

    # -- diagnostics -----------------------------------------------------------------------
    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every view (JSON columns parsed), in key order: for tests and audits."""
        keys = {
            "tasks": "task_id",
            "steps": "task_id, step_index",
            "ready": "step_id",
            "triggers": "task_id",
            "leases": "step_id",
            "history": "task_id, version",
            "published": "trigger_id",
        }
        out: dict[str, list[dict[str, Any]]] = {}
        with self.store.read() as cursor:
            for table, key in keys.items():
                cursor.execute(self.store.sql(f"SELECT * FROM {{{table}}} ORDER BY {key}"))
                out[TABLES[table]] = [
                    {
                        k: _loads(v) if k.endswith("_json") and v is not None else v
                        for k, v in dict(row).items()
                    }
                    for row in cursor.fetchall()
                ]
        return out
