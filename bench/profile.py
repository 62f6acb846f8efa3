"""Where the command path spends its time: py-spy on the Baton process at 100 in flight.

py-spy samples every thread of the service process (the event loop, the writer running the
group commit) and of its publisher process (the projections' thread, the relay and the
scheduler) without changing their code, counting only
the thread holding the GIL (``--gil``): the Python work, which one core bounds. The service's
CPU time over the run (from /proc) divided by the commands answered gives the CPU per command;
the samples split it:

- by *component*, from the stack's frames: projection catch-up (``projections``, whoever
  asked for it: its thread, or the trigger scheduler reading due triggers), progress relay and
  trigger scheduler (``adapters/publication``), the dashboard's link (``adapters/ui``, when
  on), command handling (the domain: ``domain``, with the event store writes under it), service
  glue (the rest of ``adapters``: decoding requests, dispatching, encoding replies), and NATS +
  asyncio (stacks with no Baton frame: the client library and the event loop). The first of
  these found on the stack, in that order, names the component (the relay calls the domain's
  decoder, and is still the relay);
- by *module* of the frame on top of the stack (Baton's own folders, eventsourcing, sqlite3,
  pydantic, nats, asyncio, json, ...): where the CPU actually is;
- and the top frames by own and inclusive time.

``python -m bench profile`` prints each as a share and as ms of CPU per command, so a before
and an after can be put side by side; the collapsed stacks are kept for flame graphs.
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
    children_of,
    connect_client,
    cpu_seconds,
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


ROOT = str(Path(__file__).resolve().parent.parent) + "/"

#: (component, path prefixes of its frames), in the order a stack is matched.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("projection catch-up", ("projections/",)),
    ("progress relay", ("adapters/publication/progress.py", "adapters/publication/pump.py")),
    ("trigger scheduler", ("adapters/publication/triggers.py",)),
    ("dashboard link", ("adapters/ui/",)),
    ("command handling (domain, store writes)", ("domain/",)),
    ("service glue (decode, dispatch, reply)", ("adapters/",)),
)
NATS_ASYNCIO = "NATS client + asyncio (no Baton frame)"
OTHER = "other"


def _short_path(path: str) -> str:
    if path.startswith(ROOT):
        return path[len(ROOT) :]
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _frame_name(frame: str) -> str:
    # py-spy's raw format: "function (path/to/file.py:line)"; keep function and short path.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, _line = where.rpartition(":")
    return f"{name} ({_short_path(path)})"


def _path_of(name: str) -> str:
    return name.rpartition(" (")[2].rstrip(")")


def component(paths: list[str]) -> str:
    """The component a stack's work belongs to (see the module's docstring)."""
    for label, prefixes in COMPONENTS:
        if any(path.startswith(prefixes) for path in paths):
            return label
    if any(path.startswith(("nats/", "asyncio/", "selectors.py", "ssl.py")) for path in paths):
        return NATS_ASYNCIO
    return OTHER


def module_of(path: str) -> str:
    """The library, or Baton's folder, a frame's file belongs to."""
    if path.startswith(("domain/", "projections/", "adapters/", "bench/")):
        return "baton." + path.split("/", 1)[0]
    top = path.split("/", 1)[0]
    return top[:-3] if top.endswith(".py") else top


def summarise(collapsed: Path) -> tuple[Counter[str], ...]:
    """Own, inclusive, per-thread, per-component and per-module sample counts from a py-spy raw
    (collapsed) file, and the total (the last element, as a one-key Counter)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    components: Counter[str] = Counter()
    modules: Counter[str] = Counter()
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
        names = [_frame_name(f) for f in frames]
        own[names[-1]] += count
        components[component([_path_of(n) for n in names])] += count
        modules[module_of(_path_of(names[-1]))] += count
        for name in set(names):
            if not name.endswith(GENERIC):
                inclusive[name] += count
    return own, inclusive, threads, components, modules, Counter({"total": total})


def _print_top(
    title: str, counts: Counter[str], total: int, per_command_ms: float, top: int = TOP
) -> None:
    note(title)
    for name, count in counts.most_common(top):
        share = count / total
        print(f"    {100.0 * share:5.1f}%  {share * per_command_ms:6.3f} ms/cmd  {name}")


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
                        "--subprocesses",  # baton serve's publisher process too
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                time.sleep(1.0)
                publishers = children_of(baton.pid)
                cpu_before = cpu_seconds(baton.pid)
                pub_before = sum(cpu_seconds(p) for p in publishers)
                start = time.perf_counter()
                load = run_async(lambda: _load(server.url, plans))
                elapsed = time.perf_counter() - start
                service_cpu = cpu_seconds(baton.pid) - cpu_before
                publisher_cpu = sum(cpu_seconds(p) for p in publishers) - pub_before
                cpu = service_cpu + publisher_cpu
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
                own, inclusive, threads, components, modules, totals = summarise(out)
                total = totals["total"]
        finally:
            server.close()
    note(f"{load.requests} commands in {elapsed:.1f} s ({load.rate:,.0f}/s under the profiler)")
    note(
        f"the service process used {service_cpu:.1f} s of CPU in {elapsed:.1f} s "
        f"({100 * service_cpu / elapsed:.0f}% of one core; its GIL allows at most ~100% of "
        f"Python work), its publisher process {publisher_cpu:.1f} s "
        f"({100 * publisher_cpu / elapsed:.0f}%)"
    )
    per_command = 1000.0 * cpu / load.requests if load.requests else float("nan")
    service_ms = 1000.0 * service_cpu / load.requests if load.requests else float("nan")
    note(
        f"CPU per command: {per_command:.3f} ms in all (user + system time), {service_ms:.3f} ms"
        " of it in the service process (what bounds the replies)"
    )
    note(
        f"{total} samples of the thread holding the GIL; collapsed stacks kept in {keep}; "
        "ms/cmd = share of the samples x CPU per command"
    )
    if not total:
        return {"cpu_ms_per_command": per_command}
    _print_top("by component (where the time goes per command):", components, total, per_command)
    _print_top("by module of the running frame:", modules, total, per_command, top=12)
    _print_top("GIL samples per thread:", threads, total, per_command)
    _print_top("own time (top of stack):", own, total, per_command)
    _print_top("inclusive time (anywhere on the stack):", inclusive, total, per_command)
    return {
        "cpu_ms_per_command": per_command,
        "service_cpu_ms_per_command": service_ms,
        "samples": total,
        "components": {k: v / total for k, v in components.items()},
    }


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
