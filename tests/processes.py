"""Baton as a process, as `make run` starts it (`python -m baton.adapters`, configured by BATON_*
variables), and what it published on JetStream: shared by the e2e and fault suites, and by the
session fixtures that leave JetStream as they found it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors

from baton.adapters.config import Settings
from bench.harness import children_of

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]


def around_traceback(log: str, limit: int = 8000) -> str:
    """The part of ``log`` from a little before its first traceback: what a failed "no
    traceback" assertion should show (pytest's diff of a long log shows neither)."""
    at = log.find("Traceback")
    return log if at < 0 else log[max(0, at - 1000) :][:limit]


class ServiceProcess:
    """``python -m baton.adapters`` configured by BATON_* variables; its log goes to a file per
    start."""

    def __init__(
        self,
        nats_url: str,
        data_dir: Path,
        prefix: str,
        *,
        env: dict[str, str] | None = None,
        name: str = "baton",
        own_session: bool = False,
    ) -> None:
        self.nats_url = nats_url
        self.own_session = own_session
        """Start it as a terminal starts ``make run``: in a session and process group of its
        own (its pid is the group's id), so a test can signal the whole group."""
        self.data_dir = data_dir
        self.prefix = prefix
        self.extra_env = dict(env or {})
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._children: list[int] = []
        self.exit_code: int | None = None
        self.log_dir = data_dir.parent / "logs"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def all_logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )

    def settings(self) -> Settings:
        return Settings(
            nats_url=self.nats_url,
            data_dir=self.data_dir,
            postgres_url=self.extra_env.get("BATON_POSTGRES_URL"),
            subject_prefix=self.prefix,
        )

    def start(self, timeout: float = 30.0, *, until: str = "baton: ready") -> None:
        """Starts the process and waits until its log shows ``until``."""
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env.update(
            BATON_NATS_URL=self.nats_url,
            BATON_DATA_DIR=str(self.data_dir),
            BATON_SUBJECT_PREFIX=self.prefix,
            BATON_PLANNER_TIMEOUT_S="1",
            BATON_UI_ADDR="",  # no dashboard on the shared port 8600 unless a test asks for one
        )
        env.update(self.extra_env)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "baton.adapters"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + timeout
        while until not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.exit_code = self.process.poll()
                self.kill()
                raise AssertionError(f"{self.name} did not become ready:\n{self.log()}")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _note_children(self) -> None:
        """Remembers the processes it started (``baton serve``'s publisher process): once the
        service is gone they are no longer its children, but they must go too."""
        if self.process is not None:
            self._children = children_of(self.process.pid)

    def _children_gone(self, timeout: float = 15.0) -> None:
        """Waits for the remembered children to exit by themselves (a publisher process stops
        when its service's pipe closes); kills any left and fails."""
        left = _wait_gone(self._children, timeout)
        self._children = []
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"{self.name}'s child processes {left} outlived it"

    def sigkill(self) -> None:
        assert self.process is not None and self.process.poll() is None, "not running"
        self._note_children()
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(10) == -signal.SIGKILL
        self.process = None
        self.kills += 1
        self._children_gone()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the clean shutdown; returns the exit code."""
        assert self.process is not None
        self._note_children()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        self._children_gone()
        return code

    def signal(self, sig: int) -> None:
        assert self.process is not None, "not running"
        self._note_children()
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """Waits for the process (and the processes it started) to end; returns its exit code."""
        assert self.process is not None, "not running"
        code = self.process.wait(timeout)
        self.process = None
        self._children_gone()
        return code

    def kill(self) -> None:
        if self.process is not None:
            self._note_children()
            self.process.kill()
            self.process.wait()
            self.process = None
        left = _wait_gone(self._children, 15.0)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._children = []


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Waits up to ``timeout`` for ``pids`` to exit; returns those still running."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if process_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if process_alive(p)]
    return left


def _on_a_thread(work: Coroutine[Any, Any, T]) -> T:
    """Runs ``work`` in an event loop of its own thread: callable from sync fixtures whether or
    not the test's loop exists (asyncio.run here would unset the test's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def streams_on(nats_url: str) -> set[str]:
    """The names of the JetStream streams on the server at ``nats_url``."""

    async def names() -> set[str]:
        nc = await nats.connect(nats_url)
        try:
            return {info.config.name for info in await nc.jetstream().streams_info()}
        finally:
            await nc.close()

    return _on_a_thread(names())


def delete_streams(nats_url: str, names: Iterable[str]) -> None:
    """Deletes the streams ``names`` (those that exist) from the server at ``nats_url``."""

    async def delete() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            for name in names:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(name)
        finally:
            await nc.close()

    _on_a_thread(delete())


#: JetStream API errors of a cluster electing a stream's leader (a killed node's streams):
#: the tests' reads of a stream wait them out, as Baton's publishers do.
ELECTING = (nats.errors.TimeoutError, nats.errors.NoRespondersError)
#: How long a read of a stream waits out an election.
ELECTION_S = 30.0


async def _reading(read: Callable[[Any], Awaitable[T]], nats_url: str) -> T:
    """``read(js)`` on a connection of its own, again while the stream's cluster elects a
    leader (its API answers nothing for a few seconds)."""
    deadline = time.monotonic() + ELECTION_S
    while True:
        nc = await nats.connect(nats_url)
        try:
            return await read(nc.jetstream())
        except ELECTING:
            if time.monotonic() > deadline:
                raise
        finally:
            await nc.close()
        await asyncio.sleep(0.2)


async def stream_messages(nats_url: str, stream: str) -> list[tuple[dict[str, Any], str]]:
    """Every message stored in ``stream``, in order: (decoded body, Nats-Msg-Id)."""

    async def read(js: Any) -> list[tuple[dict[str, Any], str]]:
        info = await js.stream_info(stream)
        if not info.state.messages:
            return []
        seqs = list(range(info.state.first_seq, info.state.last_seq + 1))
        found: list[tuple[dict[str, Any], str]] = []
        for start in range(0, len(seqs), 200):
            msgs = await asyncio.gather(*(js.get_msg(stream, s) for s in seqs[start : start + 200]))
            found += [
                (json.loads(m.data or b"null"), (m.headers or {})["Nats-Msg-Id"]) for m in msgs
            ]
        return found

    return await _reading(read, nats_url)


async def stream_count(nats_url: str, stream: str) -> int:
    """How many messages ``stream`` holds."""

    async def read(js: Any) -> int:
        return int((await js.stream_info(stream)).state.messages)

    return await _reading(read, nats_url)


async def wait_for_stream(nats_url: str, stream: str, count: int, timeout: float = 30.0) -> None:
    """Waits until ``stream`` holds ``count`` messages (``timeout`` only ends a broken test)."""
    deadline = time.monotonic() + timeout
    while (seen := await stream_count(nats_url, stream)) < count:
        assert time.monotonic() < deadline, f"{stream} has {seen} of {count} messages"
        await asyncio.sleep(0.1)
