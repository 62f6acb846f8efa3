"""Every query of the views walks an index: its cost grows with the page, not the table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from baton.adapters.config import Settings, event_store_env
from baton.domain.services import BatonApp
from baton.projections import Projections


class Recorded:
    """A cursor that remembers the statements it ran."""

    def __init__(self, cursor: Any, log: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.cursor, self.log = cursor, log

    def execute(self, statement: str, params: Any = ()) -> None:
        self.log.append((statement, tuple(params)))
        self.cursor.execute(statement, params)

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> Any:
        return self.cursor.fetchall()


def test_every_query_on_sqlite_uses_an_index_and_never_sorts(tmp_path: Path) -> None:
    app = BatonApp(event_store_env(Settings(data_dir=tmp_path)))
    views = Projections(app)
    statements: list[tuple[str, tuple[Any, ...]]] = []
    read = views.store.read

    @contextmanager
    def recording() -> Iterator[Recorded]:
        with read() as cursor:
            yield Recorded(cursor, statements)

    views.store.read = recording  # type: ignore[method-assign]
    try:
        views.active("s1")
        views.queue()
        views.queue("s1")
        views.tasks()
        views.tasks(status="error", after="10")
        views.tasks(session_id="s1")
        views.tasks(status="running", session_id="s1")
        views.due_triggers(time.time(), 10)
        views.next_fire_at()
        views.candidate_tasks(None, 5)
        views.candidate_tasks("s1", 5)
        views.idle_status(None)
        views.idle_status("s1")
        assert len(statements) >= 17

        with read() as cursor:
            for statement, params in statements:
                cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
                plan = [row["detail"] for row in cursor.fetchall()]
                assert not any("TEMP B-TREE" in step for step in plan), (statement, plan)
                scans = [s for s in plan if s.startswith("SCAN") and "USING" not in s]
                assert not scans, (statement, plan)
    finally:
        views.close()
        app.close()
