"""Where the command path spends its time: py-spy on the Baton process at 100 in flight.

py-spy samples every thread of the service process (the event loop, the writer running the
group commit, the projections' thread, the publisher) without changing its code; idle threads
are left out, so the figures are shares of the CPU time spent. The samples are summarised two
ways: by *own* time (the frame on top of the stack: where the CPU actually is) and by
*inclusive* time (frames anywhere on the stack: which call costs the most overall).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats  # noqa: F401 - the load generator's dependency, imported early

from bench.data import settings_for
from bench.harness import (
    Child,
    baton_env,
    connect_client,
    nats_server,
    plans_through_baton,
    run_async,
)
from bench.stats import header, note

TOP = 18
#: Frames on nearly every stack (thread and loop plumbing), left out of the inclusive list.
GENERIC = (
    "(threading.py)",
    "(<frozen runpy>)",
    "(concurrent/futures/thread.py)",
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(bench/child.py)",
)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def _frame_name(frame: str) -> str:
    # py-spy's raw format: "function (path/to/file.py:line)"; keep function and short path.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarise(collapsed: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """Own, inclusive and per-thread sample counts from a py-spy raw (collapsed) file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = ""
        if frames and frames[0].startswith(("thread", "process")):
            thread = frames.pop(0).split(": ", 1)[-1]
        frames = [f for f in frames if " (" in f]
        if not frames:
            continue
        total += count
        threads[thread or "?"] += count
        own[_frame_name(frames[-1])] += count
        for name in {_frame_name(f) for f in frames}:
            if not name.endswith(GENERIC):
                inclusive[name] += count
    return own, inclusive, threads, total


def _print_top(title: str, counts: Counter[str], total: int) -> None:
    note(title)
    for name, count in counts.most_common(TOP):
        print(f"    {100.0 * count / total:5.1f}%  {name}")


def run(quick: bool, **_: Any) -> dict[str, Any]:
    header("Profile: the command path at 100 in flight (py-spy on the Baton process)")
    spy = py_spy()
    if spy is None:
        note("SKIPPED: py-spy is not installed (pip install -r bench/requirements-peers.txt)")
        return {}
    plans = 200 if quick else 600
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        server = nats_server(Path(tmp))
        try:
            settings = settings_for(Path(tmp) / "data")
            with Child("baton", baton_env(settings, server.url)) as baton:
                run_async(lambda: _warm(server.url))
                out = Path(tmp) / "profile.txt"
                recorder = subprocess.Popen(
                    [
                        spy,
                        "record",
                        "-p",
                        str(baton.pid),
                        "-r",
                        "250",
                        "-f",
                        "raw",
                        "-o",
                        str(out),
                        "--threads",
                        "--gil",
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                time.sleep(1.0)
                cpu_before = _cpu_seconds(baton.pid)
                start = time.perf_counter()
                load = run_async(lambda: _load(server.url, plans))
                elapsed = time.perf_counter() - start
                cpu = _cpu_seconds(baton.pid) - cpu_before
                recorder.send_signal(signal.SIGINT)
                try:
                    _, err = recorder.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    recorder.kill()
                    _, err = recorder.communicate()
                if not out.exists():
                    note(f"SKIPPED: py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")
                    return {}
                keep = Path(
                    os.environ.get("BENCH_PROFILE_OUT", "/tmp/baton-command-path.collapsed")
                )
                shutil.copyfile(out, keep)
                own, inclusive, threads, total = summarise(out)
        finally:
            server.close()
    note(f"{load.requests} commands in {elapsed:.1f} s ({load.rate:,.0f}/s under the profiler)")
    note(
        f"the Baton process used {cpu:.1f} s of CPU in {elapsed:.1f} s "
        f"({100 * cpu / elapsed:.0f}% of one core; the GIL allows at most ~100% of Python work)"
    )
    note(f"{total} samples of the thread holding the GIL; collapsed stacks kept in {keep}")
    _print_top("GIL samples per thread:", threads, total)
    _print_top("own time (top of stack):", own, total)
    _print_top("inclusive time (anywhere on the stack):", inclusive, total)
    return {"samples": total}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _warm(url: str) -> None:
    client = await connect_client(url)
    try:
        await plans_through_baton(client, 4, 8)
    finally:
        await client.close()


async def _load(url: str, plans: int) -> Any:
    client = await connect_client(url)
    try:
        return await plans_through_baton(client, 100, plans)
    finally:
        await client.close()
