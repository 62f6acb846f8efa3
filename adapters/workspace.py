"""Per-task working directories under the workspace root."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


class DirectoryWorkspace:
    """Creates ``<root>/<task_id>`` for a new task and removes it when the task ends, except
    for the end statuses in ``keep`` (by default failed and cancelled tasks keep theirs)."""

    def __init__(
        self, root: Path, keep: frozenset[str] = frozenset({"error", "cancelled"})
    ) -> None:
        self.root = root.resolve()
        self.keep = keep

    def _dir(self, task_id: str) -> Path:
        if not _SAFE.match(task_id):
            raise ValueError(f"unsafe task id for a directory: {task_id!r}")
        path = (self.root / task_id).resolve()
        if path.parent != self.root:
            raise ValueError(f"task directory escapes the workspace root: {task_id!r}")
        return path

    def path_for(self, task_id: str) -> str:
        return str(self._dir(task_id))

    def create(self, task_id: str) -> None:
        self._dir(task_id).mkdir(parents=True, exist_ok=True)

    def release(self, task_id: str, status: str) -> None:
        if status in self.keep:
            return
        shutil.rmtree(self._dir(task_id), ignore_errors=True)
