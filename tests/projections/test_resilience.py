"""Crashes mid-batch, restarts and rival instances: the views converge to a rebuild."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.config import Settings, event_store_env
from baton.domain import commands as c
from baton.domain.errors import BatonError
from baton.domain.services import BatonApp
from baton.projections import Projections
from tests.plans import graph, seq
from tests.projections.support import create

ROOT = Path(__file__).resolve().parents[2]


def some_history(app: BatonApp) -> list[str]:
    """A few tasks through several commands: a few dozen notifications."""
    tasks = [create(app, seq("a", "b", "c"), session_id="s1") for _ in range(2)]
    tasks.append(create(app, graph(a=[], b=["a"]), session_id="s2", priority=1))
    for task_id in tasks:
        for command in (c.StartTask(task_id=task_id), c.NextStep(task_id=task_id)):
            with contextlib.suppress(BatonError):  # the queued task refuses both
                app.handle(command)
    app.handle(c.CancelTask(task_id=tasks[0]))
    return tasks


def converged(views: Projections) -> dict[str, Any]:
    """The views after catching up, checked equal to a rebuild from zero."""
    views.catch_up()
    assert views.lag()["behind"] == 0
    live = views.dump()
    views.rebuild()
    assert views.dump() == live
    return live


def test_a_batch_failing_between_its_rows_and_its_tracking_write_leaves_no_trace(
    app: BatonApp, open_projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    some_history(app)
    views = open_projections(app, batch_size=5)
    original = views._record_position
    calls = []

    def crash(cursor: Any, position: int) -> None:
        calls.append(position)
        if len(calls) == 2:
            cursor.execute(views.store.sql("SELECT COUNT(*) AS n FROM {history}"))
            assert cursor.fetchone()["n"] > 0  # the batch's rows are written, uncommitted
            raise RuntimeError("crash before the tracking write")
        original(cursor, position)

    monkeypatch.setattr(views, "_record_position", crash)
    with pytest.raises(RuntimeError):
        views.catch_up()
    assert views.lag()["applied"] == 5
    first_batch = app.recorder.select_notifications(start=1, limit=5)
    task_events = [n for n in first_batch if n.topic.startswith("baton:Task.")]
    assert len(views.dump()["baton_task_history"]) == len(task_events)
    views.close()

    restarted = open_projections(app, batch_size=5)
    assert restarted.lag()["applied"] == 5
    live = converged(restarted)
    assert len(live["baton_tasks"]) == 3


CRASHING_PROJECTION = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from baton.adapters.config import Settings, event_store_env
    from baton.domain.services import BatonApp
    from baton.projections import Projections

    data_dir, url, schema, batch = sys.argv[1:5]
    settings = Settings(
        data_dir=Path(data_dir), postgres_url=url or None, postgres_schema=schema or None
    )
    views = Projections(BatonApp(event_store_env(settings)), batch_size=int(batch))
    record = views._record_position
    calls = []

    def crash(cursor, position):
        calls.append(position)
        if len(calls) == 2:
            os._exit(17)  # killed: second batch's rows written, its tracking not, no commit
        record(cursor, position)

    views._record_position = crash
    views.catch_up()
    os._exit(0)
    """
)


def test_a_projection_process_killed_mid_batch_resumes_and_converges_after_restart(
    app: BatonApp, settings: Settings, open_projections
) -> None:
    some_history(app)
    batch = 4
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_PROJECTION,
            str(settings.data_dir),
            settings.postgres_url or "",
            settings.postgres_schema or "",
            str(batch),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == 17, killed.stderr

    restarted = open_projections(app)
    assert restarted.lag()["applied"] == batch  # the first batch only
    assert len(restarted.dump()["baton_task_history"]) <= batch
    live = converged(restarted)
    assert len(live["baton_tasks"]) == 3
    assert sum(len(restarted.history(t["task_id"])["events"]) for t in live["baton_tasks"]) == (
        len(live["baton_task_history"])
    )


def test_a_batch_another_instance_applied_first_is_skipped_not_applied_twice(
    app: BatonApp, open_projections, monkeypatch: pytest.MonkeyPatch
) -> None:
    some_history(app)
    ours = open_projections(app, batch_size=1000)
    theirs = open_projections(app, batch_size=7)
    compute = ours._compute

    def racing(notifications: Any) -> Any:
        theirs.catch_up()  # the rival commits the same range while ours computes it
        return compute(notifications)

    monkeypatch.setattr(ours, "_compute", racing)
    assert ours.catch_up() == 0  # its write met the rival's position and rolled back
    assert ours.lag()["behind"] == 0
    converged(theirs)


def test_instances_catching_up_concurrently_with_writers_converge_to_a_rebuild(
    app: BatonApp, open_projections
) -> None:
    instances = [open_projections(app, batch_size=3, cache_size=2) for _ in range(2)]
    stop = threading.Event()
    runners = [
        threading.Thread(target=views.run, args=(stop, 0.001), daemon=True) for views in instances
    ]
    for runner in runners:
        runner.start()
    try:
        some_history(app)
        some_history(app)
    finally:
        stop.set()
        for runner in runners:
            runner.join(timeout=10)
    live = converged(instances[0])
    assert instances[1].dump() == live
    assert len(live["baton_tasks"]) == 6


def test_the_event_store_syncs_every_commit_and_the_views_file_does_not(tmp_path: Path) -> None:
    """An acknowledged command is on disk (SQLite's FULL: the log is synced at each commit).
    The views are derived, with their position in the same transactions, so they commit
    without a sync of their own (NORMAL), which a power cut can take back and a catch-up
    re-applies; each reply no longer waits for a second fsync on the same disk."""
    app = BatonApp(event_store_env(Settings(data_dir=tmp_path)))
    views = Projections(app)
    try:
        with app.recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA synchronous")
            assert cursor.fetchone()[0] == 2  # FULL
        for _ in range(3):  # whichever pooled connection a read or write gets
            with views.store.read() as cursor:
                cursor.execute("PRAGMA synchronous")
                assert cursor.fetchone()[0] == 1  # NORMAL
            with views.store.write() as cursor:
                cursor.execute("PRAGMA synchronous")
                assert cursor.fetchone()[0] == 1
    finally:
        views.close()
        app.close()


def test_a_views_store_opening_while_another_connection_commits_waits_for_it(
    tmp_path: Path,
) -> None:
    """A publisher process starts (creating what is missing: it reads the layout, then writes)
    while the service commits to the same views file: the start waits for the other commit
    rather than failing at once with "database is locked", and so does the other writer."""
    from baton.projections.store import SQLiteViewStore

    path = str(tmp_path / "views.sqlite")
    first = SQLiteViewStore(path)
    first.create_tables()
    rival = SQLiteViewStore(path)
    rival_started, rival_done = threading.Event(), threading.Event()
    rival_failed: list[BaseException] = []

    def rival_commits() -> None:
        try:
            with rival.write() as cursor:
                cursor.execute(
                    rival.sql("INSERT INTO {published} (trigger_id, published_at) VALUES (?, ?)"),
                    ("a-trigger", 0.0),
                )
        except BaseException as error:
            rival_failed.append(error)
        finally:
            rival_done.set()

    class Opening(SQLiteViewStore):
        def _stored_schema_version(self, cursor: Any) -> int | None:
            version = super()._stored_schema_version(cursor)  # this transaction has read
            if not rival_started.is_set():
                rival_started.set()
                threading.Thread(target=rival_commits).start()
                rival_done.wait(0.5)  # a rival committing now would make the write stale
            return version

    opening = Opening(path)
    try:
        opening.create_tables()
        assert rival_done.wait(10), "the rival writer never finished"
        assert rival_failed == []
    finally:
        for store in (first, rival, opening):
            store.close()


def test_a_write_that_cannot_get_the_lock_fails_with_the_stores_own_error(
    tmp_path: Path,
) -> None:
    """``sqlite_write`` waits up to the lock timeout, then raises eventsourcing's
    OperationalError (what its callers catch), not sqlite3's."""
    import sqlite3

    from eventsourcing.persistence import OperationalError
    from eventsourcing.sqlite import SQLiteDatastore

    from baton.projections.store import sqlite_write

    path = str(tmp_path / "locked.sqlite")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    datastore = SQLiteDatastore(db_name=path, lock_timeout=1)
    try:
        with pytest.raises(OperationalError, match="locked"), sqlite_write(datastore) as cursor:
            cursor.execute("INSERT INTO t VALUES (1)")
        holder.execute("COMMIT")
        with sqlite_write(datastore) as cursor:  # the connection went back to the pool usable
            cursor.execute("INSERT INTO t VALUES (2)")
        assert holder.execute("SELECT x FROM t").fetchall() == [(2,)]
    finally:
        datastore.close()
        holder.close()
