"""Per-task working directories: one under the root per task, never anywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton.adapters.workspace import DirectoryWorkspace


def test_a_task_directory_is_made_under_the_root_and_removed_when_the_task_ends(
    tmp_path: Path,
) -> None:
    workspace = DirectoryWorkspace(tmp_path / "ws")
    workspace.create("task-1_a")
    path = Path(workspace.path_for("task-1_a"))
    assert path.is_dir() and path.parent == (tmp_path / "ws").resolve()
    workspace.release("task-1_a", "completed")
    workspace.flush()
    assert not path.exists()
    workspace.create("task-2")
    workspace.release("task-2", "error")  # failed and cancelled tasks keep theirs
    workspace.flush()
    assert Path(workspace.path_for("task-2")).is_dir()
    workspace.close()


@pytest.mark.parametrize("task_id", ["..", ".", "../x", "a/b", "/etc", "a\\b", "", "x" * 201])
def test_an_id_that_is_not_one_plain_name_gets_no_directory(tmp_path: Path, task_id: str) -> None:
    workspace = DirectoryWorkspace(tmp_path / "ws")
    with pytest.raises(ValueError):
        workspace.create(task_id)
    with pytest.raises(ValueError):
        workspace.path_for(task_id)
    assert not (tmp_path / "ws").exists() or list((tmp_path / "ws").iterdir()) == []
