"""The README's synopsis runs as written: the first thing a newcomer copies always works."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- synopsis -->"


def synopsis(readme: Path) -> str:
    """The first ```python block after the synopsis marker."""
    text = readme.read_text(encoding="utf-8")
    assert MARKER in text, f"{readme.name} has no {MARKER} marker"
    found = re.search(r"^```python[ \t]*\n(.*?)^```", text.split(MARKER, 1)[1], re.S | re.M)
    assert found, f"no ```python block follows {MARKER} in {readme.name}"
    return found.group(1)


def test_the_readme_synopsis_runs_and_stores_its_events_in_the_data_dir(tmp_path: Path) -> None:
    code = synopsis(ROOT / "README.md")
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "BATON_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONWARNINGS": "error",
    }
    env.pop("BATON_POSTGRES_URL", None)
    work = tmp_path / "cwd"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the synopsis prints what it did"
    assert "completed" in done.stdout
    store = data_dir / "events.sqlite"
    assert store.exists(), "the synopsis keeps its events in $BATON_DATA_DIR"
    with sqlite3.connect(store) as db:
        (count,) = db.execute("SELECT count(*) FROM stored_events").fetchone()
    assert count > 0
    assert not (work / "var").exists(), "nothing is written under the working directory"


def test_the_extractor_takes_the_first_python_block_after_the_marker(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(
        "```python\nbefore = 1\n```\n" + MARKER + "\ntext\n```python\nfirst = 2\n```\n"
        "```python\nsecond = 3\n```\n"
    )
    assert synopsis(readme) == "first = 2\n"
