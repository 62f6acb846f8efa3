"""Command ids: a repeat gets the first reply and changes nothing, across restarts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from baton.domain import commands as c
from baton.domain.codec import dumps_bytes
from baton.domain.errors import InvalidTransition
from baton.domain.model import CommandRecord
from baton.domain.services import BatonApp, UnitOfWork
from tests.plans import seq
from tests.unit.support import create, notification_count, sid


def test_a_repeated_create_returns_the_first_reply_and_appends_nothing(app):
    first = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="cmd-1"))
    before = notification_count(app)
    again = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="cmd-1"))
    assert again == first
    assert notification_count(app) == before


def test_the_argument_command_id_wins_over_the_field(app):
    first = app.handle(
        c.CreateTask(task_name="t", plan=seq("a"), command_id="field"), command_id="hdr"
    )
    again = app.handle(c.CreateTask(task_name="t", plan=seq("a")), command_id="hdr")
    assert again == first
    other = app.handle(c.CreateTask(task_name="t", plan=seq("a"), command_id="field"))
    assert other["task_id"] != first["task_id"]


def test_a_repeated_next_does_not_advance_twice(app):
    view = create(app, seq("a", "b", "c"))
    first = app.handle(c.NextStep(task_id=view["task_id"], command_id="n1"))
    second = app.handle(c.NextStep(task_id=view["task_id"], command_id="n1"))
    assert first == second
    assert app.task_view(view["task_id"])["current_step"]["step_name"] == "b"


def test_a_failed_command_is_not_remembered_and_can_be_retried(app):
    view = create(app, seq("a", "b"))
    b = sid(view, "b")
    with pytest.raises(InvalidTransition):
        app.handle(c.CompleteStep(task_id=view["task_id"], step_id=b, command_id="k"))
    app.handle(c.CompleteStep(task_id=view["task_id"], step_id=sid(view, "a")))
    reply = app.handle(c.CompleteStep(task_id=view["task_id"], step_id=b, command_id="k"))
    assert reply["status"] == "completed"


def test_a_repeat_is_answered_after_a_restart_on_sqlite(tmp_path):
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp_path / "e.db")}
    app = BatonApp(env)
    first = app.handle(c.CreateTask(task_name="t", plan=seq("a", "b"), command_id="create-1"))
    nxt = app.handle(c.NextStep(task_id=first["task_id"], command_id="next-1"))
    app.close()
    reopened = BatonApp(env)
    before = notification_count(reopened)
    assert (
        reopened.handle(c.CreateTask(task_name="t", plan=seq("a", "b"), command_id="create-1"))
        == first
    )
    assert reopened.handle(c.NextStep(task_id=first["task_id"], command_id="next-1")) == nxt
    assert notification_count(reopened) == before
    assert reopened.task_view(first["task_id"])["current_step"]["step_name"] == "b"
    reopened.close()


def test_a_command_without_changes_but_with_an_id_is_remembered(app):
    view = create(app, seq("a"))
    claim = c.ClaimStep(task_id=view["task_id"], worker="w", command_id="c1")
    first = app.handle(claim)
    assert first["step"]["claimed_by"] == "w"
    assert app.handle(claim) == first


def test_a_command_record_is_stored_as_the_library_would_store_it(app: BatonApp) -> None:
    """The group commit writes each command record in its stored form directly; reading it
    back must give what a record saved through the aggregate gives, for any JSON reply."""
    reply = {"task_id": "t-1", "steps": [{"n": 1, "x": None, "ok": True, "f": 1.5}], "é": "ü"}
    fast = app._stored_record("cid-1", "CreateTask", reply, dumps_bytes(reply))
    slow = app._stored_record("cid-1", "CreateTask", reply, None)  # the library's way
    assert (fast.originator_id, fast.originator_version, fast.topic) == (
        slow.originator_id,
        slow.originator_version,
        slow.topic,
    )
    read_fast = app.mapper.to_domain_event(fast).mutate(None)
    read_slow = app.mapper.to_domain_event(slow).mutate(None)
    assert isinstance(read_fast, CommandRecord) and isinstance(read_slow, CommandRecord)
    assert vars(read_fast).keys() == vars(read_slow).keys()
    assert (read_fast.command_id, read_fast.subject, read_fast.reply) == (
        "cid-1",
        "CreateTask",
        reply,
    )
    assert read_fast.reply == read_slow.reply


def test_a_reply_that_is_not_plain_json_is_recorded_the_library_s_way(app: BatonApp) -> None:
    """A reply holding a value the store's transcoder keeps in a form of its own (a datetime)
    is not stored as plain JSON bytes: a repeat gets back the same value, not its text."""
    when = datetime(2026, 12, 2, 7, 30, tzinfo=UTC)
    reply = {"task_id": "t-1", "at": when}
    encoded = app._check_sizes(UnitOfWork(app), reply)
    assert encoded is None
    stored = app._stored_record("cid-2", "CreateTask", reply, encoded)
    record = app.mapper.to_domain_event(stored).mutate(None)
    assert isinstance(record, CommandRecord) and record.reply == reply


def test_an_event_is_measured_from_its_stored_form_as_from_its_fields(app: BatonApp) -> None:
    """The 413 check measures each event from the stored form it keeps for the save: the same
    number of bytes as the event's fields written as JSON, for every kind of event, at
    versions of one, two and three digits."""
    plan = {"steps": [{"step_name": f"s{i}"} for i in range(60)]}
    view = create(app, plan)
    task_id = view["task_id"]
    app.handle(c.ClaimStep(task_id=task_id, worker="w", lease_s=30))
    app.handle(c.AddContext(task_id=task_id, key="k", value={"a": [1, "é", None]}))
    current = next(s for s in app.task_view(task_id)["steps"] if s["status"] == "current")
    app.handle(c.FailStep(task_id=task_id, step_id=current["step_id"], message="bad"))
    app.handle(c.RetryStep(task_id=task_id, step_id=current["step_id"], message="again"))
    for _ in range(55):
        app.handle(c.NextStep(task_id=task_id))
    app.handle(c.ReplanTask(task_id=task_id, plan={"steps": [{"step_name": "n1"}]}))
    app.handle(c.CancelTask(task_id=task_id, reason="enough"))
    events = [app.mapper.to_domain_event(n) for n in app.recorder.select_notifications(0, 10_000)]
    assert max(e.originator_version for e in events) >= 100
    assert len({type(e) for e in events}) >= 10
    for event in events:
        kept: dict[int, Any] = {}
        assert app._event_size(event, kept) == len(dumps_bytes(vars(event), default=str))
        assert kept[id(event)] == app.mapper.to_stored_event(event)
