"""Per-task working directories under the workspace root."""

from __future__ import annotations

import re
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
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
        self._lock = threading.Lock()
        self._remover: ThreadPoolExecutor | None = None
        self._removals: list[Future[None]] = []

    def _dir(self, task_id: str) -> Path:
        """``<root>/<task_id>``. The id is one plain name (letters, digits, ``_``, ``-``; never
        ``.`` or ``..``), so the path cannot leave the root; it is not resolved (an lstat per
        component, on the writer's thread, for every task that starts or ends)."""
        if not _SAFE.match(task_id):
            raise ValueError(f"unsafe task id for a directory: {task_id!r}")
        return self.root / task_id

    def path_for(self, task_id: str) -> str:
        return str(self._dir(task_id))

    def create(self, task_id: str) -> None:
        self._dir(task_id).mkdir(parents=True, exist_ok=True)

    def release(self, task_id: str, status: str) -> None:
        """Removes the task's directory, in the background: it runs after a group commit,
        on the writer's thread, where a tree walk would hold up every command of the next
        group. ``flush()`` waits for the removals asked so far."""
        if status in self.keep:
            return
        path = self._dir(task_id)
        with self._lock:
            if self._remover is None:
                self._remover = ThreadPoolExecutor(1, thread_name_prefix="baton-workspace")
            self._removals.append(self._remover.submit(shutil.rmtree, path, ignore_errors=True))
            self._removals = [f for f in self._removals if not f.done()]

    def flush(self, timeout: float | None = None) -> None:
        """Waits until every removal asked so far is done."""
        with self._lock:
            pending = list(self._removals)
        wait(pending, timeout)

    def close(self) -> None:
        """Finishes the removals asked so far and stops the background thread."""
        with self._lock:
            remover, self._remover = self._remover, None
        if remover is not None:
            remover.shutdown(wait=True)
