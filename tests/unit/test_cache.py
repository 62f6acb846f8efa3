"""The aggregate cache keeps the newest version whatever order concurrent saves finish in."""

from __future__ import annotations

from baton.domain import commands as c
from baton.domain.services import NewestVersionCache
from tests.plans import seq
from tests.unit.support import create


def test_an_older_version_never_replaces_a_newer_one_in_the_cache(app):
    view = create(app, seq("a", "b"))
    older = app.get_task(view["task_id"])
    app.handle(c.NextStep(task_id=view["task_id"]))
    newer = app.get_task(view["task_id"])
    cache = app.repository.cache
    assert isinstance(cache, NewestVersionCache)
    cache.put(newer.id, newer)
    cache.put(older.id, older)  # a slower thread's save finishing last
    assert app.task_view(view["task_id"])["version"] == newer.version
    assert app.handle(c.ClaimStep(task_id=view["task_id"], worker="w"))["step"]["step_name"] == "b"
