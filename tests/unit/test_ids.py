"""Task ids: a sanitised name and a timed, random suffix, safe as subject tokens and directory
names; aggregate ids from task, session and command ids, in time order for a task id with a time."""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
import time
from uuid import NAMESPACE_URL, RFC_4122, UUID, uuid5

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from baton.domain import commands as c
from baton.domain import ids
from tests.plans import seq
from tests.unit.support import create, new_app, statuses

SAFE = re.compile(r"^[A-Za-z0-9_-]+-[0-9a-f]{20}$")
UNTIMED = re.compile(r"^[A-Za-z0-9_-]+-[0-9a-f]{8}$")
EITHER = re.compile(r"^[A-Za-z0-9_-]+-(?:[0-9a-f]{12})?[0-9a-f]{8}$")
NAMESPACE = uuid5(NAMESPACE_URL, "https://baton.invalid/ids")


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
def test_a_task_id_is_the_sanitised_name_and_a_timed_random_suffix(name, slug):
    before = ids.now_ms()
    task_id = ids.new_task_id(name)
    assert SAFE.match(task_id)
    assert task_id.rsplit("-", 1)[0] == slug
    assert before <= int(task_id[-20:-8], 16) <= ids.now_ms()
    assert task_id not in {".", ".."} and "/" not in task_id and "." not in task_id
    untimed = ids.new_task_id(name, timed=False)  # what earlier releases made
    assert UNTIMED.match(untimed) and untimed.rsplit("-", 1)[0] == slug


def test_two_tasks_with_the_same_name_get_different_ids(app):
    first = create(app, seq("a"), task_name="same")
    second = create(app, seq("a"), task_name="same")
    assert first["task_id"] != second["task_id"]


def test_a_task_id_defaults_the_session_id_and_names_its_steps(app):
    view = create(app, seq("a", "b"), task_name="../../etc")
    assert view["session_id"] == view["task_id"]
    assert EITHER.match(view["task_id"])
    assert [s["step_id"] for s in view["steps"]] == [f"{view['task_id']}.0", f"{view['task_id']}.1"]


def test_aggregate_ids_are_stable_and_distinct_per_kind():
    assert ids.task_uuid("x") == ids.task_uuid("x")
    assert len({ids.task_uuid("x"), ids.session_uuid("x"), ids.command_uuid("x")}) == 3


# Aggregate ids are where stored events live: a store written by any earlier release must be
# found by the same ids, so the ids of earlier releases stay RFC 4122 name-based (version 5)
# uuids of these names.
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
def test_every_name_without_a_time_maps_to_the_standard_uuid5(name):
    assume(not re.search(r"-[0-9a-f]{20}\Z", name))  # a timed task id: the test below
    namespace = NAMESPACE
    assert ids.command_uuid(name) == uuid5(namespace, f"command:{name}")
    assert ids.task_uuid(name) == uuid5(namespace, f"task:{name}")
    assert pickle.loads(pickle.dumps(ids.session_uuid(name))) == uuid5(namespace, f"session:{name}")


# Ids with a time are stored under these uuids from this release on: pinned, like KNOWN.
KNOWN_TIMED = {
    ("task", "write-report-0193a4f2c1d83f9c2a1b"): (
        ids.task_uuid,
        UUID("0193a4f2-c1d8-7639-8119-4610c6ae889b"),
    ),
}


@pytest.mark.parametrize(("kind", "name"), list(KNOWN_TIMED))
def test_an_id_with_a_time_maps_to_a_version_7_uuid_of_that_time(kind, name):
    make, pinned = KNOWN_TIMED[kind, name]
    made = make(name)
    assert (made.version, made.variant) == (7, RFC_4122)
    assert made.int >> 80 == 0x0193A4F2C1D8  # the id's milliseconds lead
    assert made == pinned
    assert made != uuid5(NAMESPACE, f"{kind}:{name}")
    assert pickle.loads(pickle.dumps(made)) == made and hash(made) == hash(UUID(str(made)))


@pytest.mark.parametrize(
    "name",
    [
        "0193a4f2c1d87a2b9c3d4e5f60718293",  # a UUIDv7 as hex
        "c-0193a4f2c1d87a2b9c3d4e5f60718293",  # after a dash
        "0193a4f2-c1d8-7a2b-9c3d-4e5f60718293",  # with dashes
        "write-report-0193a4f2c1d83f9c2a1b",  # shaped like a timed task id
    ],
)
def test_command_and_session_ids_with_a_time_in_them_keep_their_uuid5(name):
    """Clients name commands and sessions: an id of any shape may have a record or a session
    stored under its uuid5 (by an earlier release, or an instance of one sharing the store)."""
    assert ids.command_uuid(name) == uuid5(NAMESPACE, f"command:{name}")
    assert ids.session_uuid(name) == uuid5(NAMESPACE, f"session:{name}")


def test_tasks_made_later_have_later_aggregate_ids():
    first = [ids.task_uuid(ids.new_task_id(name)) for name in ("zeta", "alpha", "mid")]
    time.sleep(0.003)
    later = [ids.task_uuid(ids.new_task_id(name)) for name in ("zeta", "alpha", "mid")]
    assert max(first) < min(later)


def test_a_store_keeps_working_as_timed_ids_are_turned_on_and_off():
    """Tasks of either kind, and command records, are found whatever the setting is now: the
    kind of a task id says how it maps, and a command id maps as it always did."""
    app = new_app(timed_ids=False)
    old = create(app, seq("a", "b"), task_name="before")
    assert UNTIMED.match(old["task_id"])
    uuid7_id = "c-0193a4f2c1d87a2b9c3d4e5f60718293"  # a UUIDv7, as many clients make ids
    first = app.handle(c.NextStep(task_id=old["task_id"]), command_id=uuid7_id)
    app.timed_ids = True  # the same store, restarted with the setting on
    new = create(app, seq("a", "b"), task_name="after")
    assert SAFE.match(new["task_id"])
    again = app.handle(c.NextStep(task_id=old["task_id"]), command_id=uuid7_id)
    assert again == first  # the old record is found: the step was not completed twice
    command = "0193a4f2-c1d8-7a2b-9c3d-4e5f60718294"
    reply = app.handle(c.NextStep(task_id=new["task_id"]), command_id=command)
    assert app.handle(c.NextStep(task_id=new["task_id"]), command_id=command) == reply
    app.timed_ids = False  # and back: timed task ids are still found by their kind
    assert app.handle(c.NextStep(task_id=new["task_id"]), command_id=command) == reply
    assert app.reply_for(command) == reply
    for task in (old, new):  # each next applied once: the first step done, the second current
        assert statuses(app.task_view(task["task_id"])) == {"a": "completed", "b": "current"}


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
