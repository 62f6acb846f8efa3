"""What a newcomer met on first use (issue #13, items 4, 8-11, 13, 14, 16, 17): each test failed
before its fix."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from baton.adapters.client import BatonClient
from baton.adapters.messages import parse
from baton.adapters.natsserver import EmbeddedNatsServer
from baton.domain import commands as c
from baton.domain.errors import InvalidRequest
from tests.cli.conftest import BATON, Service, cli_env
from tests.cli.test_watch import Lines
from tests.plans import seq

ROOT = Path(__file__).resolve().parents[2]


def statuses(view: dict[str, Any]) -> dict[str, str]:
    return {s["step_name"]: s["status"] for s in view["steps"]}


# -- 4: a step named like an index ------------------------------------------------------------


def test_a_step_name_wins_over_an_index(service: Service) -> None:
    # Seed 004's own example plans name their steps "1", "2", "3".
    task = service.api("create_task", task_name="numbered", plan=seq("1", "2", "3"))
    service.run("step", "complete", task["task_id"], "1", "--result", "one")
    view = service.json("show", task["task_id"])
    assert statuses(view) == {"1": "completed", "2": "pending", "3": "pending"}
    assert view["steps"][0]["result"] == "one"


def test_an_index_still_names_a_step_when_no_step_has_that_name(service: Service) -> None:
    task = service.api("create_task", task_name="named", plan=seq("a", "b"))
    service.run("step", "complete", task["task_id"], "0")
    assert statuses(service.json("show", task["task_id"]))["a"] == "completed"
    done = service.run("step", "complete", task["task_id"], "7", check=False)
    assert done.returncode == 2
    assert "has no step named or at index '7' (steps: a, b)" in done.stderr


# -- 8: watch across a NATS restart -------------------------------------------------------------


async def _quiet(error: Exception) -> None:
    """Connection errors while the server restarts are expected."""


async def _client(url: str, prefix: str) -> BatonClient:
    """A client once the service answers again (it reconnects on its own after a restart)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            client = await BatonClient.connect(url, prefix=prefix, timeout=2, error_cb=_quiet)
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
            continue
        try:
            await client.tasks(limit=1)
            return client
        except Exception:
            await client.close()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def test_watch_resumes_after_the_nats_server_restarts(tmp_path: Path) -> None:
    with EmbeddedNatsServer(tmp_path / "js") as server:
        prefix = f"cli{uuid.uuid4().hex[:8]}"
        env = cli_env(server.url, prefix, tmp_path / "data")
        log = (tmp_path / "serve.log").open("w")
        serve = subprocess.Popen([BATON, "serve"], env=env, stdout=log, stderr=log)
        watch: subprocess.Popen[str] | None = None
        try:

            async def create() -> str:
                client = await _client(server.url, prefix)
                async with client:
                    task = await client.create_task(task_name="resumed", plan=seq("a", "b", "c"))
                    return str(task["task_id"])

            task_id = asyncio.run(create())
            watch = subprocess.Popen(
                [BATON, "watch", task_id, "--timeout", "90"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert watch.stdout is not None and watch.stderr is not None
            out = Lines(watch.stdout)
            out.wait_for("Task 'resumed' created with 3 steps")

            async def advance(times: int) -> None:
                client = await _client(server.url, prefix)
                async with client:
                    for _ in range(times):
                        await client.next_step(task_id=task_id)

            asyncio.run(advance(1))
            out.wait_for("Step 'a' completed")

            server.stop()
            time.sleep(1.5)
            server.start()

            asyncio.run(advance(2))  # b, then c: the task completes by itself
            out.wait_for("Step 'b' completed", timeout=30)
            out.wait_for("Task 'resumed' completed", timeout=30)
            assert watch.wait(30) == 0
            errors = watch.stderr.read()
            assert "lost the connection to NATS; reconnecting" in errors
            assert "reconnected; resuming after stream sequence" in errors
            assert "Traceback" not in errors
            shown = [line for line in out.lines if "Step 'a' completed" in line]
            assert len(shown) == 1, out.lines  # resumed after what it saw, not from the start
        finally:
            if watch is not None:
                if watch.poll() is None:
                    watch.kill()
                    watch.wait()
                for stream in (watch.stdout, watch.stderr):
                    if stream is not None:
                        stream.close()
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(15)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
            log.close()


# -- 9: a closed pipe ---------------------------------------------------------------------------


def test_demo_into_a_closed_pipe_ends_its_task_and_exits_0_quietly(service: Service) -> None:
    session = f"pipe{uuid.uuid4().hex[:6]}"
    done = subprocess.run(
        [
            "bash",
            "-o",
            "pipefail",
            "-c",
            f"'{BATON}' demo --pause 0.3 --session {session} | head -1",
        ],
        env=service.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("created task ")
    task_id = done.stdout.split()[2].rstrip(":")
    view = service.json("show", task_id)
    assert view["status"] == "cancelled", view["status"]
    assert service.api("active", session_id=session) is None


# -- 10: ls suggests an option that exists --------------------------------------------------------


def test_ls_suggests_a_next_page_command_that_works(service: Service) -> None:
    session = f"ls{uuid.uuid4().hex[:6]}"
    ids = [
        service.api("create_task", task_name="paged", session_id=session, plan=seq("a"))["task_id"]
        for _ in range(3)
    ]
    first = service.run("ls", "--session", session, "--limit", "2")
    hint = re.search(r"\(more: --all, or (baton ls .*)\)", first.stderr)
    assert hint, first.stderr
    assert f"--session {session}" in hint.group(1) and "--limit 2" in hint.group(1)
    following = service.run(*hint.group(1).split()[1:], "--json")
    page = json.loads(following.stdout)
    shown = [line.split()[0] for line in first.stdout.splitlines()[1:]]
    assert sorted(shown + [t["task_id"] for t in page["tasks"]]) == sorted(ids)


# -- 11: "queued" is the trigger's word -----------------------------------------------------------


def test_start_and_next_say_which_step_got_a_trigger(service: Service) -> None:
    task_id = service.api("create_task", task_name="advance", plan=seq("a", "b"))["task_id"]
    started = service.run("task", "start", task_id).stdout
    assert started.splitlines()[0].startswith("trigger scheduled for step a")
    assert "queued" not in started
    advanced = service.run("task", "next", task_id).stdout
    assert advanced.splitlines()[0].startswith("trigger scheduled for step b")
    finished = service.run("task", "next", task_id).stdout
    assert finished.splitlines()[0] == "task completed: no step left"


# -- 13: cancelled is not done ------------------------------------------------------------------


def test_step_counts_do_not_count_cancelled_steps_as_done(service: Service) -> None:
    session = f"count{uuid.uuid4().hex[:6]}"
    task = service.api("create_task", task_name="counted", session_id=session, plan=seq(*"abcd"))
    service.api("next_step", task_id=task["task_id"])
    service.api("cancel_task", task_id=task["task_id"])
    shown = service.run("show", task["task_id"]).stdout
    assert "steps 1/4 completed, 3 cancelled" in shown.splitlines()[0]
    listed = service.run("ls", "--session", session).stdout.splitlines()
    assert "1/4, 3 cancelled" in listed[1]


# -- 14: projections status outside a data directory ----------------------------------------------


def test_projections_status_outside_a_data_directory_says_so_and_creates_nothing(
    service: Service, tmp_path: Path
) -> None:
    env = {k: v for k, v in service.env.items() if k != "BATON_DATA_DIR"}
    done = service.run("projections", "status", check=False, env=env, cwd=tmp_path)
    assert done.returncode == 2
    looked = (tmp_path / "var" / "events.sqlite").resolve()
    assert f"no Baton store here: looked for {looked} and found nothing" in done.stderr
    assert list(tmp_path.iterdir()) == []


# -- 16: a queued task's first step; context on show; error texts ---------------------------


def test_the_first_step_of_a_queued_task_is_waiting_not_blocked(service: Service) -> None:
    session = f"queued{uuid.uuid4().hex[:6]}"
    service.api("create_task", task_name="first", session_id=session, plan=seq("a"))
    queued = service.api("create_task", task_name="second", session_id=session, plan=seq("x", "y"))
    lines = service.run("show", queued["task_id"]).stdout.splitlines()
    assert "queued" in lines[0]
    step_x = next(line for line in lines if " x " in line)
    step_y = next(line for line in lines if " y " in line)
    assert step_x.endswith("waiting") and step_y.endswith("blocked"), lines


def test_show_displays_the_task_context_and_each_steps_own_context(service: Service) -> None:
    task = service.api("create_task", task_name="ctx", plan=seq("a", "b"))
    task_id = task["task_id"]
    service.run("context", task_id, "repo", '"github.com/acme/app"')
    service.run("step", "complete", task_id, "a", "--result", '{"rows": 3}')
    lines = service.run("show", task_id).stdout.splitlines()
    assert "  context repo = github.com/acme/app" in lines
    under_b = lines[[i for i, line in enumerate(lines) if " b " in line][0] :]
    assert any('context a = {"rows": 3}' in line for line in under_b), lines
    assert sum("context repo" in line for line in lines) == 1  # shown once, on the task


def test_error_texts_do_not_repeat_their_prefix() -> None:
    with pytest.raises(InvalidRequest) as malformed:
        parse(c.CreateTask, b'{"task_name": ')
    assert malformed.value.message.startswith("the request is not valid JSON: ")
    assert "Invalid JSON" not in malformed.value.message
    blank = {"steps": [{"step_name": "  "}]}
    with pytest.raises(InvalidRequest) as invalid:
        parse(c.CreateTask, json.dumps({"task_name": "t", "plan": blank}).encode())
    assert invalid.value.message.endswith("step_name: step_name must not be blank")
    assert "Value error" not in invalid.value.message


async def test_a_malformed_request_error_names_json_once(service: Service) -> None:
    nc = await nats.connect(service.env["BATON_NATS_URL"])
    try:
        msg = await nc.request(f"{service.prefix}.task.create", b"{", timeout=10)
    finally:
        await nc.close()
    message = json.loads(msg.data)["error"]["message"]
    assert message.count("JSON") == 1, message


# -- 17: where `baton` is -------------------------------------------------------------------------


def test_the_readme_says_where_the_baton_command_is_before_using_it_bare() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_bare = re.search(r"(?m)^\| `baton |^baton ", readme)
    assert first_bare is not None
    before = readme[: first_bare.start()]
    assert "source .venv/bin/activate" in before and ".venv/bin/baton" in before
