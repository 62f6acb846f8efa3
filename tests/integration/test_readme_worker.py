"""The README's "Writing a worker" example runs as written, against a running Baton."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.nats_support import running_baton, settings_for

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- worker -->"


def worker_example() -> str:
    """The first ```python block after the worker marker."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert MARKER in text, f"README.md has no {MARKER} marker"
    found = re.search(r"^```python[ \t]*\n(.*?)^```", text.split(MARKER, 1)[1], re.S | re.M)
    assert found, f"no ```python block follows {MARKER}"
    return found.group(1)


async def test_the_readme_worker_example_finishes_its_plan_with_a_retried_step(
    nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(nats_url, tmp_path)
    async with running_baton(settings) as baton:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env.update(
            BATON_NATS_URL=nats_url,
            BATON_SUBJECT_PREFIX=baton.prefix,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            PYTHONWARNINGS="error",
        )
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", worker_example()],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "WorkReport(claimed=4, completed=3, failed=1, dropped=0)"
        assert lines[1].startswith("completed ")
        found = (await baton.client.tasks(session_id="release-notes"))["tasks"]
        view = await baton.client.task(task_id=found[0]["task_id"])
        assert view["status"] == "completed"
        review = view["steps"][1]
        assert review["attempts"] == 2
        assert review["result"] == {"approved": True, "draft": "draft done"}
