"""Task ids: a sanitised name and a random suffix, safe as subject tokens and directory names."""

from __future__ import annotations

import re

import pytest

from baton.domain import ids
from tests.plans import seq
from tests.unit.support import create

SAFE = re.compile(r"^[A-Za-z0-9_-]+-[0-9a-f]{8}$")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Write the report", "write-the-report"),
        ("../..", "task"),
        ("/etc/passwd", "etc-passwd"),
        ("naïve café ☕", "na-ve-caf"),
        ("☕☕☕", "task"),
        (".", "task"),
        ("a" * 300, "a" * 48),
        ("x\x00y\nz", "x-y-z"),
    ],
)
def test_a_task_id_is_the_sanitised_name_and_a_random_suffix(name, slug):
    task_id = ids.new_task_id(name)
    assert SAFE.match(task_id)
    assert task_id.rsplit("-", 1)[0] == slug
    assert task_id not in {".", ".."} and "/" not in task_id and "." not in task_id


def test_two_tasks_with_the_same_name_get_different_ids(app):
    first = create(app, seq("a"), task_name="same")
    second = create(app, seq("a"), task_name="same")
    assert first["task_id"] != second["task_id"]


def test_a_task_id_defaults_the_session_id_and_names_its_steps(app):
    view = create(app, seq("a", "b"), task_name="../../etc")
    assert view["session_id"] == view["task_id"]
    assert SAFE.match(view["task_id"])
    assert [s["step_id"] for s in view["steps"]] == [f"{view['task_id']}.0", f"{view['task_id']}.1"]


def test_aggregate_ids_are_stable_and_distinct_per_kind():
    assert ids.task_uuid("x") == ids.task_uuid("x")
    assert len({ids.task_uuid("x"), ids.session_uuid("x"), ids.command_uuid("x")}) == 3
