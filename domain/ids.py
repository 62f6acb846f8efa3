"""Identifiers: task ids safe as subject tokens and directory names, aggregate ids from them."""

from __future__ import annotations

import re
import secrets
from functools import lru_cache
from typing import Final
from uuid import NAMESPACE_URL, UUID, uuid5

SESSION_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"
_NAMESPACE: Final = uuid5(NAMESPACE_URL, "https://baton.invalid/ids")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def new_task_id(task_name: str) -> str:
    """A sanitised slug of the name plus a short random suffix, e.g. ``write-report-3f9c2a1b``.

    Only ``[A-Za-z0-9_-]`` survive, so the id is a valid subject token and a safe directory
    name (never ``.``, ``..`` or a path) whatever the name holds.
    """
    slug = _UNSAFE.sub("-", task_name.lower()).strip("-_")[:48].strip("-_") or "task"
    return f"{slug}-{secrets.token_hex(4)}"


# Small caches: a task's or session's uuid is asked for a few times per command; a command id's
# once or twice in its life, so caching many of them would only hold memory (issue 15's soak).
@lru_cache(maxsize=4096)
def task_uuid(task_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"task:{task_id}")


@lru_cache(maxsize=1024)
def session_uuid(session_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"session:{session_id}")


@lru_cache(maxsize=256)
def command_uuid(command_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"command:{command_id}")


def step_id_for(task_id: str, step_index: int) -> str:
    return f"{task_id}.{step_index}"


def new_action_id() -> str:
    return secrets.token_hex(8)


def new_trigger_id() -> str:
    return f"trg-{secrets.token_hex(8)}"


def new_claim_id() -> str:
    return f"clm-{secrets.token_hex(8)}"
