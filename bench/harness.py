"""A private nats-server, the service under test in its own process, and the load generators."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from baton.adapters.config import Settings
from baton.adapters.natsserver import EmbeddedNatsServer
from bench.data import STEPS, env_for, plan

ROOT = Path(__file__).resolve().parent.parent


class ChildFailed(RuntimeError):
    pass


class Child:
    """``python -m bench.child KIND`` with ``env``; started, waited for ``READY``, stopped."""

    def __init__(self, kind: str, env: dict[str, str], startup_timeout: float = 600.0) -> None:
        self.kind = kind
        self.env = env
        self.startup_timeout = startup_timeout
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{kind}-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Child:
        begin = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.child", self.kind],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        ready = threading.Event()

        stdout = self.process.stdout
        assert stdout is not None

        def watch() -> None:
            try:
                for line in stdout:
                    if line.strip() == b"READY":
                        ready.set()
            except (ValueError, OSError):  # stop() closed the pipe
                pass

        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.tail()
                self.stop()
                raise ChildFailed(f"the {self.kind} process did not become ready:\n{tail}")
        self.started_in = time.perf_counter() - begin
        return self

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak resident) of the child, in KiB, from /proc; with the processes
        it started (``baton serve``'s publisher process) added: ``VmRSS``/``VmHWM`` are the sums,
        ``service_*`` and ``publisher_*`` the parts."""
        found = _memory_of(self.pid)
        out = dict(found)
        for key in ("VmRSS", "VmHWM"):
            out[f"service_{key}"] = found.get(key, 0)
            out[f"publisher_{key}"] = 0
        for child in children_of(self.pid):
            theirs = _memory_of(child)
            for key in ("VmRSS", "VmHWM"):
                out[key] = out.get(key, 0) + theirs.get(key, 0)
                out[f"publisher_{key}"] += theirs.get(key, 0)
        return out

    def tail(self, lines: int = 30) -> str:
        try:
            text = Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self.process = None

    def close(self) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)

    def __enter__(self) -> Child:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _memory_of(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/PID/stat (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` started (``baton serve``'s publisher process), from /proc."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]
    except OSError:
        return []


def baton_env(settings: Settings, nats_url: str) -> dict[str, str]:
    env = env_for(settings)
    env["BATON_NATS_URL"] = nats_url
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def echo_env(nats_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BATON_NATS_URL"] = nats_url
    return env


def nats_server(tmp: Path) -> EmbeddedNatsServer:
    return EmbeddedNatsServer(store_dir=tmp / "nats").start()


# -- load generators ------------------------------------------------------------------------


@dataclass
class Load:
    """What one timed run did: requests answered, seconds, and each request's latency."""

    requests: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0


async def _timed(load: Load, call: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    result = await call
    load.latencies.append(time.perf_counter() - start)
    load.requests += 1
    return result


async def connect_client(url: str) -> Any:
    """A ``BatonClient`` on ``url`` (its own NATS connection)."""
    from baton.adapters.client import BatonClient

    return await BatonClient.connect(url, prefix="baton", timeout=60.0)


async def plans_through_baton(client: Any, in_flight: int, plans: int) -> Load:
    """``plans`` plans of 10 sequential steps, ``in_flight`` at once: create, start, next x 10.

    Every request waits for its reply before the same plan sends the next, so ``in_flight`` is
    the number of requests outstanding at any moment.
    """
    the_plan = plan(STEPS)
    load = Load()
    todo = iter(range(plans))

    async def worker() -> None:
        for i in todo:
            view = await _timed(
                load,
                client.create_task(task_name=f"bench-{i}", task_instruction="bench", plan=the_plan),
            )
            task_id = view["task_id"]
            await _timed(load, client.start_task(task_id=task_id))
            for _ in range(STEPS):
                reply = await _timed(load, client.next_step(task_id=task_id))
            if reply["status"] != "completed":
                load.errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    load.elapsed = time.perf_counter() - start
    return load


COMMANDS_PER_PLAN = STEPS + 2


async def plan_commands(url: str, in_flight: int, plans: int) -> int:
    """``plans`` of benchmark 1's plans through a client of its own, ``in_flight`` at once; the
    commands they took (raises if a plan did not complete)."""
    client = await connect_client(url)
    try:
        load = await plans_through_baton(client, in_flight, plans)
    finally:
        await client.close()
    if load.errors:
        raise RuntimeError(f"{load.errors} plans did not complete")
    return plans * COMMANDS_PER_PLAN


async def echo_requests(nc: Any, in_flight: int, requests: int, body: bytes) -> Load:
    """``requests`` requests to the echo endpoint, ``in_flight`` at once."""
    load = Load()
    remaining = iter(range(requests))

    async def worker() -> None:
        for _ in remaining:
            await _timed(load, nc.request("bench.echo", body, timeout=60.0))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    load.elapsed = time.perf_counter() - start
    return load


def typical_body() -> bytes:
    """A request body as large as a create with a 10-step plan, for the echo baseline."""
    return json.dumps(
        {"task_name": "bench", "task_instruction": "bench", "plan": plan(STEPS)}
    ).encode()


def run_async(factory: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(factory())  # type: ignore[arg-type]
