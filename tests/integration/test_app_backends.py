"""One application test body, run on every backend: in-memory, SQLite file and PostgreSQL.

Behaviour must not depend on the store: the same scenario gives the same replies, history and
views on each, and an application reopened on the same store answers as the live one did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.sqlite import SQLiteApplicationRecorder

from baton.adapters.config import Settings, event_store_env
from baton.adapters.persistence import SQLiteLog, delete_command_records
from baton.domain import commands as c
from baton.domain.errors import NotFound
from baton.domain.model import Task
from baton.domain.services import BatonApp
from baton.domain.session import Session

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


@pytest.fixture(params=["popo", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The eventsourcing environment of one backend."""
    if request.param == "popo":
        yield dict(POPO)
    elif request.param == "sqlite":
        yield event_store_env(Settings(data_dir=tmp_path / "data"))
    else:
        db = request.getfixturevalue("postgres_db")
        yield event_store_env(Settings(data_dir=tmp_path / "data", postgres_url=db["url"]))


def names(view: dict[str, Any]) -> dict[str, str]:
    return {s["step_name"]: s["status"] for s in view["steps"]}


def by_name(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in view["steps"] if s["step_name"] == name)


PLAN = {
    "goal": "a weekly report",
    "inputs_params": {"week": 47},
    "context": {"audience": "team"},
    "steps": [
        {"step_name": "fetch", "description": "fetch the data", "depends_on": []},
        {"step_name": "parse", "description": "parse it", "depends_on": ["fetch"]},
        {"step_name": "chart", "description": "draw charts", "depends_on": ["parse"]},
        {"step_name": "write", "description": "write it", "depends_on": ["parse", "chart"]},
        {"step_name": "review", "description": "review it", "depends_on": ["write"]},
    ],
}


def test_a_task_lives_the_same_life_on_every_backend(store: dict[str, str]) -> None:
    app = BatonApp(store)
    reopen: Callable[[], BatonApp] = lambda: BatonApp(store)  # noqa: E731
    try:
        created = app.handle(
            c.CreateTask(
                task_name="Weekly report",
                task_instruction="write the weekly report",
                session_id="agent-7",
                priority=2,
                plan=PLAN,
            ),
            command_id="create-report",
        )
        task_id = created["task_id"]
        assert created["status"] == "running"
        assert names(created) == {
            "fetch": "current", "parse": "pending", "chart": "pending",
            "write": "pending", "review": "pending",
        }  # fmt: skip
        assert created["context"] == {"audience": "team"}  # once, for every step

        started = app.handle(c.StartTask(task_id=task_id, delay_s=5))
        assert started["status"] == "queued" and started["step"]["step_name"] == "fetch"
        assert started["trigger"]["session_id"] == "agent-7"
        assert started["trigger"]["priority"] == 2

        claimed = app.handle(c.ClaimStep(session_id="agent-7", worker="w1"))
        assert claimed["queue_status"] == "in_progress"
        assert claimed["step"]["step_name"] == "fetch" and claimed["step"]["claimed_by"] == "w1"
        fetch = claimed["step"]["step_id"]
        app.handle(c.CompleteStep(task_id=task_id, step_id=fetch, result={"rows": 42}))
        assert "trigger" not in app.task_view(task_id)

        claimed = app.handle(c.ClaimStep(task_id=task_id, worker="w2"))
        assert claimed["step"]["step_name"] == "parse"
        assert claimed["step"]["context"] == {"audience": "team", "fetch": {"rows": 42}}
        app.handle(
            c.CompleteStep(task_id=task_id, step_id=claimed["step"]["step_id"], result="parsed")
        )

        revised_plan = {
            "steps": [
                {"step_name": "fetch", "description": "refetch?", "depends_on": []},
                {"step_name": "chart", "description": "draw two charts", "depends_on": ["parse"]},
                {"step_name": "write", "description": "write it", "depends_on": ["parse", "chart"]},
                {"step_name": "proofread", "description": "proofread", "depends_on": ["write"]},
            ]
        }
        revised = app.handle(c.ReplanTask(task_id=task_id, plan=revised_plan))
        assert revised["diff"] == {
            "added": ["proofread"],
            "changed": ["chart"],
            "removed": ["review"],
        }
        assert by_name(revised, "fetch")["description"] == "fetch the data"
        assert by_name(revised, "review")["status"] == "cancelled"
        assert by_name(revised, "chart")["context"]["parse"] == "parsed"

        chart = app.handle(c.ClaimStep(task_id=task_id, worker="w1"))["step"]
        assert chart["step_name"] == "chart"
        app.handle(c.FailStep(task_id=task_id, step_id=chart["step_id"], message="timeout"))
        assert app.handle(c.NextStep(task_id=task_id))["status"] == "no_next_step"
        assert app.handle(c.ClaimStep(task_id=task_id)) == {"step": None, "queue_status": "failed"}
        app.handle(c.RetryStep(task_id=task_id, step_id=chart["step_id"]))
        again = app.handle(c.ClaimStep(task_id=task_id, worker="w3"))["step"]
        assert (again["step_name"], again["attempts"], again["claimed_by"]) == ("chart", 2, "w3")
        app.handle(c.CompleteStep(task_id=task_id, step_id=chart["step_id"], result=[1, 2]))

        app.handle(c.AddContext(task_id=task_id, key="deadline", value="friday"))
        to_write = app.handle(c.NextStep(task_id=task_id))
        assert to_write["status"] == "queued" and to_write["step"]["step_name"] == "write"
        assert to_write["step"]["context"]["chart"] == [1, 2]
        assert to_write["step"]["context"]["deadline"] == "friday"

        to_proof = app.handle(c.NextStep(task_id=task_id), command_id="next-after-write")
        assert to_proof["step"]["step_name"] == "proofread"
        before = app.recorder.max_notification_id()
        assert app.handle(c.NextStep(task_id=task_id), command_id="next-after-write") == to_proof
        assert app.recorder.max_notification_id() == before

        skipped = app.handle(
            c.SkipStep(task_id=task_id, step_id=to_proof["step"]["step_id"], message="n/a")
        )
        assert skipped["task_status"] == "completed"
        final = app.task_view(task_id)
        assert final["status"] == "completed" and "trigger" not in final
        assert names(final) == {
            "fetch": "completed", "parse": "completed", "chart": "completed",
            "write": "completed", "review": "cancelled", "proofread": "skipped",
        }  # fmt: skip
        assert app.session_state("agent-7").running is None

        history = app.history(task_id)
        assert [e["version"] for e in history] == list(range(1, final["version"] + 1))
        assert history[0]["type"] == "Created" and history[-1]["type"] == "Ended"
        assert all(e["display_message"] for e in history)
        types = [e["type"] for e in history]
        for expected in (
            "StepClaimed",
            "StepFailed",
            "StepRetried",
            "PlanRevised",
        ):
            assert expected in types

        assert app.task_view(task_id, version=created["version"]) == created
        assert app.task_view(task_id, version=revised["version"])["steps"] == revised["steps"]
        with pytest.raises(NotFound):
            app.task_view(task_id, version=final["version"] + 1)
        # Rebuilt from the stored events, bypassing the aggregate cache.
        assert app.task_view(task_id, version=final["version"]) == final

        # A long-lived task crosses the snapshot interval and still reads back the same.
        long_id = app.handle(c.CreateTask(task_name="long", session_id="agent-8", plan=PLAN))[
            "task_id"
        ]
        for i in range(105):
            app.handle(c.AddContext(task_id=long_id, key=f"k{i % 7}", value=i))
        long_view = app.task_view(long_id)
        assert long_view["version"] > 100
        assert list(app.snapshots.get(app.get_task(long_id).id)), "snapshot every 100 events"

        if store.get("PERSISTENCE_MODULE") == "eventsourcing.popo":
            return
        reopened = reopen()
        try:
            assert reopened.task_view(task_id) == final
            assert reopened.history(task_id) == history
            assert reopened.task_view(task_id, version=created["version"]) == created
            assert (
                reopened.handle(c.CreateTask(task_name="x", plan=PLAN), command_id="create-report")
                == created
            )
            assert reopened.task_view(long_id) == long_view
            assert reopened.task_view(long_id, version=50) == app.task_view(long_id, version=50)
        finally:
            reopened.close()
    finally:
        app.close()


def test_a_group_larger_than_one_insert_is_stored_whole_and_in_order(
    store: dict[str, str],
) -> None:
    """A group commit writes all its events in one transaction (on SQLite in statements of
    many rows each): every event is stored, each aggregate's events at increasing positions in
    version order, and the group reads back as applied, past the first statement's rows too."""
    app = BatonApp(store)
    try:
        plan = {"steps": [{"step_name": f"s{i}"} for i in range(3)]}
        requests = [(c.CreateTask(task_name=f"t{i}", plan=plan), f"create-{i}") for i in range(200)]
        created = app.handle_batch(requests)
        assert not [r for r in created if isinstance(r, BaseException)]
        notifications = app.recorder.select_notifications(1, 10_000)
        assert len(notifications) > 500  # more rows than one INSERT statement carries
        positions = [n.id for n in notifications]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        versions: dict[Any, int] = {}
        for notification in notifications:
            previous = versions.get(notification.originator_id, 0)
            assert notification.originator_version == previous + 1  # in version order
            versions[notification.originator_id] = notification.originator_version
        for reply in created:
            assert app.task_view(reply["task_id"])["status"] == "running"
        again = app.handle_batch(requests[:3])  # repeats: the stored replies
        assert again == created[:3]
    finally:
        app.close()


def test_a_group_stores_each_event_as_the_library_encodes_it(store: dict[str, str]) -> None:
    """With a message limit (as the service runs), each event is encoded once, to measure it,
    and saved in that form: every stored row, read back and encoded again by the library's
    mapper, is the same row, at its aggregate's next version. The group holds several commands
    on one task (create, start, next, next), so one aggregate's events come from several."""
    app = BatonApp(store, max_message_bytes=1024 * 1024)
    try:
        plan = {"steps": [{"step_name": f"s{i}"} for i in range(3)]}
        created = app.handle_batch(
            [(c.CreateTask(task_name=f"t{i}", plan=plan), f"create-{i}") for i in range(3)]
        )
        task_ids = [reply["task_id"] for reply in created]
        group: list[tuple[c.Command, str | None]] = []
        for task_id in task_ids:
            group += [
                (c.StartTask(task_id=task_id), f"start-{task_id}"),
                (c.NextStep(task_id=task_id), f"next-1-{task_id}"),
                (c.NextStep(task_id=task_id), None),
            ]
        results = app.handle_batch(group)
        assert not [r for r in results if isinstance(r, BaseException)]
        rows = app.recorder.select_notifications(1, 10_000)
        versions: dict[Any, int] = {}
        for row in rows:
            event = app.mapper.to_domain_event(row)
            again = app.mapper.to_stored_event(event)
            assert (again.originator_id, again.originator_version, again.topic) == (
                row.originator_id,
                row.originator_version,
                row.topic,
            )
            assert app.mapper.transcoder.decode(again.state) == app.mapper.transcoder.decode(
                row.state
            )
            assert row.originator_version == versions.get(row.originator_id, 0) + 1
            versions[row.originator_id] = row.originator_version
        # Read back from the store (a new application on it; in memory, this one's own).
        reader = app if store == POPO else BatonApp(store)
        reader.repository.cache = None
        for task_id in task_ids:
            view = reader.task_view(task_id)
            assert names(view) == {"s0": "completed", "s1": "completed", "s2": "current"}
            assert view == app.task_view(task_id)
    finally:
        app.close()


def test_the_positions_a_write_reports_are_the_ones_it_is_read_back_at(
    store: dict[str, str],
) -> None:
    """The recorder says where each written event landed (on SQLite from multi-row
    statements, by their last row): exactly the positions the log then reads them at."""
    app = BatonApp(store)
    try:
        app.handle(c.CreateTask(task_name="first", plan=PLAN))
        session = Session.create("many")
        for i in range(600):  # more rows than one statement carries
            session.admit(f"task-{i}")
        stored = [app.mapper.to_stored_event(e) for e in session.collect_events()]
        positions = app.recorder.insert_events(stored)
        read = app.recorder.select_notifications(1, 10_000)
        at = {(n.originator_id, n.originator_version): n.id for n in read}
        assert list(positions or []) == [
            at[(s.originator_id, s.originator_version)] for s in stored
        ]
    finally:
        app.close()


def test_the_sqlite_log_reads_notifications_as_the_library_does(tmp_path: Path) -> None:
    """The SQLite recorder's own read of the log (from a position, up to a limit) gives the
    library's notifications exactly, with gaps where command records were pruned, from any
    position, inclusive or not, and the library's answer for the shapes it does not take."""
    app = BatonApp(event_store_env(Settings(data_dir=tmp_path / "data")))
    try:
        recorder = app.recorder
        assert isinstance(recorder, SQLiteLog)
        plan = {"steps": [{"step_name": f"s{i}"} for i in range(3)]}
        for i in range(30):
            view = app.handle(c.CreateTask(task_name=f"t{i}", plan=plan), command_id=f"c-{i}")
            app.handle(c.StartTask(task_id=view["task_id"]), command_id=f"s-{i}")
        last = recorder.max_notification_id() or 0
        assert delete_command_records(recorder, last // 2) > 0  # gaps in the first half

        def library(*args: Any, **kwargs: Any) -> Any:
            return SQLiteApplicationRecorder.select_notifications(recorder, *args, **kwargs)

        for start in (0, 1, 7, last // 2, last - 3, last, last + 5):
            for limit in (1, 10, 1000):
                for inclusive in (True, False):
                    ours = recorder.select_notifications(start, limit, inclusive_of_start=inclusive)
                    theirs = library(start, limit, inclusive_of_start=inclusive)
                    assert ours == theirs
                    assert [type(n) for n in ours] == [type(n) for n in theirs]
                    assert [hash(n.originator_id) for n in ours] == [
                        hash(n.originator_id) for n in theirs
                    ]
        topics = [Task.TOPIC + ".Created"]
        assert recorder.select_notifications(0, 100, topics=topics) == library(
            0, 100, topics=topics
        )
        assert recorder.select_notifications(0, 100, stop=20) == library(0, 100, stop=20)
        assert recorder.select_notifications(None, 5) == library(None, 5)
    finally:
        app.close()
