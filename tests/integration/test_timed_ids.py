"""Timed task ids follow the store (``BATON_TIMED_IDS``): a store this release starts empty, or
one ``1`` marked, makes them; a store an earlier release wrote keeps untimed ids until ``1`` is
set (such a release may still share it); ``0`` always makes untimed ids. Tasks of both kinds are
found whatever the setting. On the real stores: a SQLite file and a PostgreSQL schema."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from baton.adapters.config import Settings, event_store_env
from baton.adapters.streamids import deployment_secret
from baton.adapters.timedids import timed_ids
from baton.domain import commands as c
from baton.domain.services import BatonApp
from tests.integration.nats_support import running_baton, settings_for
from tests.plans import seq
from tests.unit.support import statuses

TIMED = re.compile(r"^[a-z0-9_-]+-[0-9a-f]{20}$")
UNTIMED = re.compile(r"^[a-z0-9_-]+-[0-9a-f]{8}$")

OpenApp = Callable[[], BatonApp]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenApp]:
    """Opens apps on one store, a new one each call (a restart), closed after the test."""
    settings = Settings(data_dir=tmp_path / "data")
    if request.param == "postgres":
        db: dict[str, Any] = request.getfixturevalue("postgres_db")
        with psycopg.connect(db["url"], autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier("timed")))
        settings = Settings(
            data_dir=tmp_path / "data", postgres_url=db["url"], postgres_schema="timed"
        )
    opened: list[BatonApp] = []

    def open_one() -> BatonApp:
        app = BatonApp(event_store_env(settings))
        opened.append(app)
        return app

    yield open_one
    for app in opened:
        app.close()


def _start(open_app: OpenApp, setting: bool | None) -> BatonApp:
    """What ``baton serve`` does at start: the app, then the setting decided with the store."""
    app = open_app()
    app.timed_ids = timed_ids(app.recorder, setting)
    return app


def _create(app: BatonApp, name: str) -> str:
    view = app.handle(c.CreateTask(task_name=name, plan=seq("a", "b")))
    return str(view["task_id"])


def test_a_store_started_empty_makes_timed_ids_and_keeps_making_them(open_app: OpenApp) -> None:
    first = _start(open_app, None)
    assert first.timed_ids
    made = _create(first, "first")
    assert TIMED.match(made)
    again = _start(open_app, None)  # a restart: the store now holds events, and its mark
    assert again.timed_ids
    assert TIMED.match(_create(again, "second"))
    assert again.task_view(made)["status"] == "running"


def test_a_store_an_earlier_release_wrote_keeps_untimed_ids_until_1_marks_it(
    open_app: OpenApp,
) -> None:
    earlier = open_app()  # an earlier release: untimed ids, no mark
    earlier.timed_ids = False
    old = _create(earlier, "old")
    assert UNTIMED.match(old)
    uuid7_id = "c-0193a4f2c1d87a2b9c3d4e5f60718293"  # a client's UUIDv7 command id
    first = earlier.handle(c.NextStep(task_id=old), command_id=uuid7_id)

    unset = _start(open_app, None)
    assert not unset.timed_ids  # it may still share the store: ids stay untimed
    assert UNTIMED.match(_create(unset, "still-old"))
    assert not _start(open_app, False).timed_ids

    marked = _start(open_app, True)  # set once no earlier release is left
    assert marked.timed_ids
    new = _create(marked, "new")
    assert TIMED.match(new)
    assert _start(open_app, None).timed_ids  # the mark stays: unset now means timed
    # The earlier release's record is found: the repeat gets the first reply, and is not applied.
    assert marked.handle(c.NextStep(task_id=old), command_id=uuid7_id) == first

    off = _start(open_app, False)
    assert not off.timed_ids  # 0 wins over the mark, and both kinds are still found
    off.handle(c.NextStep(task_id=new))
    for task_id in (old, new):  # each next applied once: the first step done, the second current
        assert statuses(off.task_view(task_id)) == {"a": "completed", "b": "current"}


def test_a_store_an_earlier_release_started_on_stays_untimed_before_its_first_task(
    open_app: OpenApp,
) -> None:
    """An earlier release records the deployment secret as it starts: its store holds no event
    yet, and still it may be serving (a rolling upgrade of a deployment without tasks)."""
    earlier = open_app()
    deployment_secret(earlier.recorder)
    assert not earlier.recorder.max_notification_id()
    assert not _start(open_app, None).timed_ids
    assert _start(open_app, True).timed_ids  # until 1 marks it


def test_0_on_an_empty_store_leaves_it_unmarked(open_app: OpenApp) -> None:
    app = _start(open_app, False)
    assert not app.timed_ids
    assert UNTIMED.match(_create(app, "plain"))
    assert not _start(open_app, None).timed_ids  # events and no mark: an earlier release's


def test_the_setting_reads_1_0_or_unset() -> None:
    assert [Settings.from_env(env).timed_ids for env in ({}, {"BATON_TIMED_IDS": ""})] == [
        None,
        None,
    ]
    assert Settings.from_env({"BATON_TIMED_IDS": "1"}).timed_ids is True
    assert Settings.from_env({"BATON_TIMED_IDS": "0"}).timed_ids is False


async def test_baton_serve_decides_with_its_store(start_baton: Any) -> None:
    """The service started on an empty store makes timed ids; with ``BATON_TIMED_IDS=0`` (a
    store an earlier release still shares), the ids it made before."""
    fresh = await start_baton()
    timed = await fresh.client.create_task(task_name="report", plan=seq("a"))
    assert TIMED.match(timed["task_id"])
    plain = await start_baton(timed_ids=False)
    untimed = await plain.client.create_task(task_name="report", plan=seq("a"))
    assert UNTIMED.match(untimed["task_id"])


async def test_baton_serve_keeps_untimed_ids_on_a_store_an_earlier_release_wrote(
    nats_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "earlier"
    earlier = BatonApp(event_store_env(Settings(data_dir=data_dir)))  # untimed, no mark
    try:
        old = _create(earlier, "old")
    finally:
        earlier.close()
    async with running_baton(settings_for(nats_url, data_dir)) as upgraded:  # unset
        made = await upgraded.client.create_task(task_name="report", plan=seq("a"))
        assert UNTIMED.match(made["task_id"])
        assert (await upgraded.client.task(task_id=old))["status"] == "running"
