"""Task ids: a sanitised name and a timed, random suffix, safe as subject tokens and directory
names; aggregate ids from task, session and command ids, in time order where the id has a time."""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading
import time
from uuid import NAMESPACE_URL, RFC_4122, UUID, uuid5

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baton.adapters.client import new_msg_id
from baton.domain import commands as c
from baton.domain import ids
from tests.plans import seq
from tests.unit.support import create, new_app, statuses

SAFE = re.compile(r"^[A-Za-z0-9_-]+-[0-9a-f]{20}$")
UNTIMED = re.compile(r"^[A-Za-z0-9_-]+-[0-9a-f]{8}$")
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
    assert SAFE.match(view["task_id"])
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
    namespace = NAMESPACE
    assert ids.command_uuid(name) == uuid5(namespace, f"command:{name}")
    assert ids.task_uuid(name) == uuid5(namespace, f"task:{name}")
    assert pickle.loads(pickle.dumps(ids.session_uuid(name))) == uuid5(namespace, f"session:{name}")


@given(st.text(max_size=200))
def test_with_timed_ids_off_every_command_id_maps_to_the_standard_uuid5(name):
    timed_form = f"{name}-{ids.new_command_id()[2:]}"
    for command_id in (name, timed_form, ids.new_command_id()):
        made = ids.command_uuid(command_id, timed=False)
        assert made == uuid5(NAMESPACE, f"command:{command_id}")


# Ids with a time are stored under these uuids from this release on: pinned, like KNOWN.
KNOWN_TIMED = {
    ("task", "write-report-0193a4f2c1d83f9c2a1b"): (
        ids.task_uuid,
        UUID("0193a4f2-c1d8-7639-8119-4610c6ae889b"),
    ),
    ("command", "c-0193a4f2c1d87a2b9c3d4e5f60718293"): (
        ids.command_uuid,
        UUID("0193a4f2-c1d8-798a-95a5-5332447b4ca1"),
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


def _uuid7_hex(ms: int, rest: int) -> str:
    return f"{ms:012x}7{rest >> 74 & 0xFFF:03x}{8 | rest >> 72 & 3:x}{rest & (1 << 60) - 1:015x}"


@given(
    st.lists(
        st.tuples(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1)), min_size=2, max_size=8
    ),
    st.sampled_from(["", "c-", "client-7-"]),
    st.booleans(),
)
def test_command_ids_ending_in_a_uuid7_sort_by_their_time_and_stay_distinct(pairs, prefix, dashed):
    made = {}
    for ms, rest in pairs:
        hex_id = _uuid7_hex(ms, rest)
        text = str(UUID(hex_id)) if dashed else hex_id
        made[f"{prefix}{text}"] = ms
    uuids = {command_id: ids.command_uuid(command_id) for command_id in made}
    assert len(set(uuids.values())) == len(uuids)  # distinct ids, distinct records
    for command_id, ms in made.items():
        assert uuids[command_id].int >> 80 == ms and uuids[command_id].version == 7
        assert ids.command_uuid(command_id) == uuids[command_id]  # the same every time
    order = sorted(made, key=lambda command_id: uuids[command_id])
    assert [made[i] for i in order] == sorted(made.values())


@pytest.mark.parametrize(
    "command_id",
    [
        "c-0193a4f2c1d84a2b9c3d4e5f60718293",  # a UUIDv4 (Baton's client before this release)
        "c0193a4f2c1d87a2b9c3d4e5f60718293",  # no dash before it
        "c-0193A4F2C1D87A2B9C3D4E5F60718293",  # uppercase
        "c-0193a4f2c1d87a2b7c3d4e5f60718293",  # not RFC variant
        "0193a4f2c1d87a2b9c3d4e5f6071829",  # 31 digits
    ],
)
def test_other_command_ids_keep_the_uuid5_of_earlier_releases(command_id):
    assert ids.command_uuid(command_id) == uuid5(NAMESPACE, f"command:{command_id}")


def test_baton_s_client_makes_command_ids_with_their_time_in_a_uuid7():
    before = ids.now_ms()
    made = [new_msg_id() for _ in range(100)]
    after = ids.now_ms()
    assert len(set(made)) == 100
    for command_id in made:
        assert re.fullmatch(r"c-[0-9a-f]{32}", command_id)
        assert UUID(command_id[2:]).version == 7
        assert before <= ids.command_uuid(command_id).int >> 80 <= after


def test_tasks_made_later_have_later_aggregate_ids():
    first = [ids.task_uuid(ids.new_task_id(name)) for name in ("zeta", "alpha", "mid")]
    time.sleep(0.003)
    later = [ids.task_uuid(ids.new_task_id(name)) for name in ("zeta", "alpha", "mid")]
    assert max(first) < min(later)


def test_a_store_keeps_working_as_timed_ids_are_turned_on_and_off():
    """Tasks and command records of either kind are found whatever the setting is now: the
    kind of a task id says how it maps, and a command id without a time maps as it always did."""
    app = new_app(timed_ids=False)
    old = create(app, seq("a", "b"), task_name="before")
    assert UNTIMED.match(old["task_id"])
    first = app.handle(c.NextStep(task_id=old["task_id"]), command_id="c-old-client-id")
    app.timed_ids = True  # the same store, restarted with the setting on
    new = create(app, seq("a", "b"), task_name="after")
    assert SAFE.match(new["task_id"])
    again = app.handle(c.NextStep(task_id=old["task_id"]), command_id="c-old-client-id")
    assert again == first  # the old record is found: the step was not completed twice
    timed_command = new_msg_id()
    reply = app.handle(c.NextStep(task_id=new["task_id"]), command_id=timed_command)
    assert app.handle(c.NextStep(task_id=new["task_id"]), command_id=timed_command) == reply
    assert app.reply_for(timed_command) == reply
    app.timed_ids = False  # and back: timed task ids are still found by their kind
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
