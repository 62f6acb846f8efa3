"""Identifiers: task ids safe as subject tokens and directory names, aggregate ids from them."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from hashlib import sha1
from threading import Lock
from typing import Final
from uuid import NAMESPACE_URL, UUID, SafeUUID, uuid5

SESSION_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"
_NAMESPACE: Final = uuid5(NAMESPACE_URL, "https://baton.invalid/ids")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


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
#: The bits ``UUID(bytes=..., version=5)`` clears and sets: RFC 4122 variant, version 5.
_V5_CLEAR: Final = ~((0xC000 << 48) | (0xF000 << 64))
_V5_SET: Final = (0x8000 << 48) | (5 << 76)


def _uuid5(name: str) -> UUID:
    """``uuid5(_NAMESPACE, name)``, built without ``UUID.__init__``'s argument checks (half the
    cost of one, on every command's record)."""
    digest = sha1(_NAMESPACE_BYTES + name.encode()).digest()
    value = int.from_bytes(digest[:16], "big") & _V5_CLEAR | _V5_SET
    uuid = object.__new__(UUID)
    object.__setattr__(uuid, "int", value)
    object.__setattr__(uuid, "is_safe", SafeUUID.unknown)
    return uuid


def new_task_id(task_name: str) -> str:
    """A sanitised slug of the name plus a short random suffix, e.g. ``write-report-3f9c2a1b``.

    Only ``[A-Za-z0-9_-]`` survive, so the id is a valid subject token and a safe directory
    name (never ``.``, ``..`` or a path) whatever the name holds.
    """
    slug = _UNSAFE.sub("-", task_name.lower()).strip("-_")[:48].strip("-_") or "task"
    return f"{slug}-{random_hex(4)}"


# Small caches: a task's or session's uuid is asked for a few times per command; a command id's
# once or twice in its life, so caching many of them would only hold memory (issue 15's soak).
@lru_cache(maxsize=4096)
def task_uuid(task_id: str) -> UUID:
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
