"""Identifiers: task ids safe as subject tokens and directory names, aggregate ids from them.

Where an aggregate's events are stored follows its id: the event store's index is ordered by it.
An RFC 4122 name-based (version 5) uuid lands anywhere in that index, so on a big store every
task's command wrote an index page of its own (``bench growth``, at ~9,100 tasks: the service
wrote 39 KiB per command, against 22 KiB on an empty store, and its CPU per command was 1.3x
the empty store's; with timed task ids, 25 KiB and 0.86-0.92x the CPU of uuid5 ids). Task ids made
with their creation time in them (``new_task_id``) map to uuids in UUIDv7's layout instead: that
time in the first 48 bits, so the tasks of the last few minutes, the ones being worked on, share
a few pages at the end of the index. Every other id maps to the version 5 uuid of its name, as it
always did: a task id made by an earlier release has no time in it, so its events are found by
the same uuid.

Command ids (idempotency records) and session ids stay version 5 uuids of their names. They are
chosen by clients, so an id of any shape may already have a record under its uuid5 (stored by an
earlier release, or by an instance of one sharing the store); mapping such an id elsewhere would
run its repeat a second time. (A task's own session, named after it, is such an id too.)
"""

from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from hashlib import sha1
from threading import Lock
from typing import Final
from uuid import NAMESPACE_URL, UUID, SafeUUID, uuid5

SESSION_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"
_NAMESPACE: Final = uuid5(NAMESPACE_URL, "https://baton.invalid/ids")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
#: A task id made with its creation time: ``<slug>-<12 hex: ms since the epoch><8 hex random>``.
#: Ids made before (``<slug>-<8 hex>``) cannot match: their last part is 8 hex digits.
_TIMED_TASK_ID: Final = re.compile(r"-([0-9a-f]{12})[0-9a-f]{8}")


class _RandomPool:
    """Random bytes from the operating system (``os.urandom``, as ``secrets`` reads them), taken
    4 KiB at a time and handed out once each.

    ``secrets.token_hex`` makes a system call per id, and CPython lets go of the GIL around it:
    on the writer's thread, with the event loop busy, each such call could wait for the GIL
    behind it (the same cost ``SQLiteLog`` avoids for INSERTs). A pool makes that one call per
    few hundred ids. A forked child starts with an empty pool, so two processes never hand out
    the same bytes."""

    SIZE: Final = 4096

    def __init__(self) -> None:
        self._lock = Lock()
        self._buffer = b""
        self._at = 0

    def hex(self, nbytes: int) -> str:
        with self._lock:
            at = self._at
            if at + nbytes > len(self._buffer):
                self._buffer = os.urandom(self.SIZE)
                at = 0
            self._at = at + nbytes
            return self._buffer[at : at + nbytes].hex()

    def reset(self) -> None:
        """An empty pool, and a new lock (a thread of the parent may have held the old one at
        the fork; in the child it would never be released)."""
        self._lock = Lock()
        self._buffer, self._at = b"", 0


_RANDOM = _RandomPool()
os.register_at_fork(after_in_child=_RANDOM.reset)


def random_hex(nbytes: int) -> str:
    """``nbytes`` random bytes from the operating system as hex, like ``secrets.token_hex``."""
    return _RANDOM.hex(nbytes)


_NAMESPACE_BYTES: Final = _NAMESPACE.bytes
#: The bits ``UUID(bytes=..., version=5)`` clears and sets: RFC 4122 variant, version 5 (the
#: clear mask is the same for any version).
_V5_CLEAR: Final = ~((0xC000 << 48) | (0xF000 << 64))
_V5_SET: Final = (0x8000 << 48) | (5 << 76)


def _uuid5(name: str) -> UUID:
    """``uuid5(_NAMESPACE, name)``, built without ``UUID.__init__``'s argument checks (half the
    cost of one, on every command's record)."""
    digest = sha1(_NAMESPACE_BYTES + name.encode()).digest()
    return _bare_uuid(int.from_bytes(digest[:16], "big") & _V5_CLEAR | _V5_SET)


def _bare_uuid(value: int) -> UUID:
    """The UUID of the 128-bit ``value``, without ``UUID.__init__``'s checks."""
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", value)
    object.__setattr__(uuid, "is_safe", SafeUUID.unknown)
    return uuid


#: Bits ``UUID(..., version=7)`` clears and sets (RFC 9562: variant 10, version 7).
_V7_SET: Final = (0x8000 << 48) | (7 << 76)


def _timed_uuid(ms: int, name: str) -> UUID:
    """A uuid in UUIDv7's layout: ``ms`` in the first 48 bits, then (version and variant apart)
    74 bits of the SHA-1 of the namespaced name, so distinct names of the same millisecond
    still get distinct uuids, and the same name always the same one."""
    digest = sha1(_NAMESPACE_BYTES + name.encode()).digest()
    value = ((ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(digest[:10], "big")) & _V5_CLEAR
    return _bare_uuid(value | _V7_SET)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_task_id(task_name: str, *, timed: bool = True) -> str:
    """A sanitised slug of the name plus a dash and 20 hex digits: the creation time in ms
    (12) and 8 random ones, e.g. ``write-report-0193a4f2c1d83f9c2a1b``. With ``timed`` off,
    only the 8 random ones (``write-report-3f9c2a1b``, the ids every release made before, and
    the ones an earlier release sharing the store can find). The time is the wall clock's, not
    the application's: it only orders where the task's events are stored.

    Only ``[A-Za-z0-9_-]`` survive, so the id is a valid subject token and a safe directory
    name (never ``.``, ``..`` or a path) whatever the name holds.
    """
    slug = _UNSAFE.sub("-", task_name.lower()).strip("-_")[:48].strip("-_") or "task"
    if not timed:
        return f"{slug}-{random_hex(4)}"
    return f"{slug}-{now_ms():012x}{random_hex(4)}"


# Small caches: a task's or session's uuid is asked for a few times per command; a command id's
# once or twice in its life, so caching many of them would only hold memory (issue 15's soak).
@lru_cache(maxsize=4096)
def task_uuid(task_id: str) -> UUID:
    """The task's aggregate id: in time order for a task id made with its time, else the
    version 5 uuid of the id."""
    timed = _TIMED_TASK_ID.fullmatch(task_id, len(task_id) - 21) if len(task_id) > 21 else None
    if timed is not None:
        return _timed_uuid(int(timed[1], 16), f"task:{task_id}")
    return _uuid5(f"task:{task_id}")


@lru_cache(maxsize=1024)
def session_uuid(session_id: str) -> UUID:
    return _uuid5(f"session:{session_id}")


@lru_cache(maxsize=256)
def command_uuid(command_id: str) -> UUID:
    return _uuid5(f"command:{command_id}")


def step_id_for(task_id: str, step_index: int) -> str:
    return f"{task_id}.{step_index}"


def new_action_id() -> str:
    return random_hex(8)


def new_trigger_id() -> str:
    return f"trg-{random_hex(8)}"


def new_claim_id() -> str:
    return f"clm-{random_hex(8)}"
