"""``baton watch`` end to end: live progress of a task until it ends, as a subprocess, on a pty
and in tmux, while other commands drive the task."""

from __future__ import annotations

import json
import os
import pty
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from typing import IO, Any

import pytest

from tests.cli.conftest import BATON, Service

TWO_STEPS = {"steps": [{"step_name": "a", "description": "first"}, {"step_name": "b"}]}


class Lines:
    """A subprocess' output lines, read on a thread, awaited by content."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        except (ValueError, OSError):  # closed under us at the end of a test
            pass
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 15) -> str:
        for line in self.lines:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in:\n" + "\n".join(self.lines))


def new_task(service: Service, session: str | None = None) -> str:
    view = service.api("create_task", task_name="watched", session_id=session, plan=TWO_STEPS)
    return str(view["task_id"])


def test_watch_shows_a_task_live_until_it_completes(service: Service) -> None:
    task_id = new_task(service)
    with service.popen("watch", task_id, "--timeout", "30") as watch:
        assert watch.stdout is not None and watch.stderr is not None
        out = Lines(watch.stdout)
        _follow_a_task(service, task_id, watch, out)
        assert "Traceback" not in watch.stderr.read()


def _follow_a_task(service: Service, task_id: str, watch: Any, out: Lines) -> None:
    # Live, not a replay: the first event shows before anything else happens to the task.
    assert "[0/2]" in out.wait_for("Task 'watched' created with 2 steps")
    service.run("task", "start", task_id)
    out.wait_for("Trigger scheduled for step 'a'")
    fired = out.wait_for("fired")  # published by the trigger scheduler, within 1 s
    assert f"for {task_id}.0" in fired
    service.run("step", "complete", task_id, "a", "--result", "42")
    assert "[1/2]" in out.wait_for("Step 'a' completed")
    service.run("task", "next", task_id)
    out.wait_for("Step 'b' is now in progress")
    service.run("task", "next", task_id)
    assert "[2/2]" in out.wait_for("Task 'watched' completed")
    assert watch.wait(15) == 0
    out.wait_for("2/2 completed  task completed")


def test_watch_replays_an_ended_task_and_exits_3_when_it_did_not_complete(
    service: Service,
) -> None:
    task_id = new_task(service)
    service.api("cancel_task", task_id=task_id, reason="changed my mind")
    done = service.run("watch", task_id, "--json", "--timeout", "20", check=False)
    assert done.returncode == 3, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["type"] == "Created" and events[-1]["type"] == "Ended"
    assert [e["version"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["status"] == "cancelled"


def test_watch_of_a_running_task_times_out_with_124(service: Service) -> None:
    task_id = new_task(service)
    done = service.run("watch", task_id, "--timeout", "1", check=False)
    assert done.returncode == 124
    assert f"task {task_id}: timed out after 1 s" in done.stderr
    assert "Task 'watched' created" in done.stdout


def test_watch_of_an_unknown_task_is_a_404(service: Service) -> None:
    done = service.run("watch", "no-such-task", "--timeout", "10", check=False)
    assert done.returncode == 2
    assert "error 404 not_found: no task 'no-such-task'" in done.stderr


def test_watch_a_session_shows_only_its_tasks_until_ctrl_c(service: Service) -> None:
    with service.popen("watch", "--session", "watched-s", "--timeout", "30") as watch:
        assert watch.stdout is not None and watch.stderr is not None
        out = Lines(watch.stdout)
        out.wait_for("watching session watched-s")
        other = new_task(service, session="other-s")
        mine = new_task(service, session="watched-s")
        line = out.wait_for("Task 'watched' created")
        assert line.startswith(mine)
        service.api("complete_task", task_id=mine)
        out.wait_for("Ended")
        watch.send_signal(signal.SIGINT)
        assert watch.wait(15) == 130
        assert "Traceback" not in watch.stderr.read()
    assert all(other not in line for line in out.lines)


def test_ctrl_c_stops_a_watch_while_events_stream_in(service: Service) -> None:
    """SIGINT lands while events and their lookups are in flight, and still ends the watch
    with 130 (a cancellation that meets a ready result must not be swallowed)."""
    for attempt in range(6):
        with service.popen("watch", "--session", "busy-s", "--timeout", "60") as watch:
            assert watch.stdout is not None and watch.stderr is not None
            out = Lines(watch.stdout)
            out.wait_for("watching session busy-s")
            stop = threading.Event()

            driver = threading.Thread(target=_drive_until, args=(service, stop), daemon=True)
            driver.start()
            try:
                out.wait_for("Task 'watched' created")
                time.sleep(0.05 * attempt)
                watch.send_signal(signal.SIGINT)
                assert watch.wait(10) == 130, f"attempt {attempt}"
            finally:
                stop.set()
                driver.join(30)
            assert "Traceback" not in watch.stderr.read()


def _drive_until(service: Service, stop: threading.Event) -> None:
    while not stop.is_set():  # a task of another session too: a lookup per event
        new_task(service, session="elsewhere-s")
        new_task(service, session="busy-s")


def _drive_to_completion(service: Service, task_id: str) -> None:
    service.api("complete_step", task_id=task_id, step_id=f"{task_id}.0", result="x")
    service.api("next_step", task_id=task_id)
    service.api("next_step", task_id=task_id)


def test_watch_on_a_terminal_draws_colours_and_a_live_progress_bar(service: Service) -> None:
    task_id = new_task(service)
    main, replica = pty.openpty()
    env = {**service.env, "TERM": "xterm-256color"}
    watch = subprocess.Popen(
        [BATON, "watch", task_id, "--timeout", "30"],
        env=env,
        stdin=replica,
        stdout=replica,
        stderr=replica,
        close_fds=True,
    )
    os.close(replica)
    screen = b""

    def read_until(needle: bytes, timeout: float = 15) -> None:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while needle not in screen and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    screen += os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
        assert needle in screen, screen.decode(errors="replace")

    try:
        read_until(b"current: a")  # the progress bar, drawn under the event lines
        _drive_to_completion(service, task_id)
        read_until(b"completed: every step is finished")
        assert watch.wait(15) == 0
        read_until(b"2/2 completed")
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        os.close(main)
    text = screen.decode()
    assert "\x1b[32m" in text  # green for completed steps
    assert "\r\x1b[K" in text  # the bar is redrawn in place
    assert "█" in text


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_watch_in_tmux_leaves_the_story_on_screen(service: Service, tmp_path: Any) -> None:
    task_id = new_task(service)
    session = f"baton-{task_id}"
    env = {**service.env, "TERM": "xterm-256color"}
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("BATON_"))
    command = f"env {exports} {BATON} watch {task_id} --timeout 30; sleep 30"
    socket = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", socket]
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command],
        check=True,
        env=env,
    )
    try:

        def pane() -> str:
            return subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                check=True,
            ).stdout

        def wait_screen(text: str, timeout: float = 15) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                screen = pane()
                if text in screen:
                    return screen
                time.sleep(0.1)
            raise AssertionError(f"{text!r} not on screen:\n{pane()}")

        wait_screen("current: a")
        _drive_to_completion(service, task_id)
        screen = wait_screen("2/2 completed  task completed")
        lines = [line for line in screen.splitlines() if line.strip()]
        assert "Task 'watched' created with 2 steps" in lines[0]
        assert any("✔ Step 'a' completed" in line for line in lines)
        assert lines[-1].startswith("[████████████████████] 2/2 completed")
    finally:
        subprocess.run([*tmux, "kill-server"], check=False, capture_output=True)
