"""Task ids: a sanitised name and a random suffix, safe as subject tokens and directory names."""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
from uuid import NAMESPACE_URL, RFC_4122, uuid5

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# Aggregate ids are where stored events live: a store written by any earlier release must be
# found by the same ids, so they stay RFC 4122 name-based (version 5) uuids of these names.
KNOWN = {
    ("task", "write-report-3f9c2a1b"): ids.task_uuid,
    ("session", "s1"): ids.session_uuid,
    ("command", "c-0001"): ids.command_uuid,
}


@pytest.mark.parametrize(("kind", "name"), list(KNOWN))
def test_aggregate_ids_are_the_version_5_uuids_of_their_names(kind, name):
    made = KNOWN[kind, name](name)
    expected = uuid5(uuid5(NAMESPACE_URL, "https://baton.invalid/ids"), f"{kind}:{name}")
    assert made == expected
    assert (made.version, made.variant, str(made), hash(made)) == (
        5,
        RFC_4122,
        str(expected),
        hash(expected),
    )


@given(st.text(max_size=200))
def test_every_name_maps_to_the_standard_uuid5(name):
    namespace = uuid5(NAMESPACE_URL, "https://baton.invalid/ids")
    assert ids.command_uuid(name) == uuid5(namespace, f"command:{name}")
    assert ids.task_uuid(name) == uuid5(namespace, f"task:{name}")
    assert pickle.loads(pickle.dumps(ids.session_uuid(name))) == uuid5(namespace, f"session:{name}")


def test_random_ids_are_hex_of_the_asked_length_and_never_repeat():
    drawn = [ids.random_hex(8) for _ in range(3 * 4096 // 8)]  # past several refills of the pool
    assert all(re.fullmatch(r"[0-9a-f]{16}", value) for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert re.fullmatch(r"trg-[0-9a-f]{16}", ids.new_trigger_id())
    assert re.fullmatch(r"clm-[0-9a-f]{16}", ids.new_claim_id())
    assert re.fullmatch(r"[0-9a-f]{16}", ids.new_action_id())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the platform cannot fork")
def test_a_forked_process_draws_other_random_ids_than_its_parent():
    ids.random_hex(8)  # the pool holds bytes the child must not hand out again
    reader, writer = os.pipe()
    held, release = threading.Event(), threading.Event()

    def drawing() -> None:  # another thread, in the middle of drawing an id at the fork
        with ids._RANDOM._lock:
            held.set()
            release.wait(5)

    other = threading.Thread(target=drawing)
    other.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent (or nothing, if it hangs)
        os.close(reader)
        signal.alarm(5)
        os.write(writer, " ".join(ids.random_hex(8) for _ in range(16)).encode())
        os._exit(0)
    os.close(writer)
    release.set()
    other.join()
    with os.fdopen(reader) as pipe:
        theirs = set(pipe.read().split())
    os.waitpid(pid, 0)
    ours = {ids.random_hex(8) for _ in range(16)}
    assert len(theirs) == 16
    assert not theirs & ours
