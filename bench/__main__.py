"""``python -m bench [NAME ...] [--quick]``: runs the benchmarks (all of them by default).

Names (or numbers): baselines, commands (1), transitions (2), rebuild (3), scale (4),
longtask (5), postgres (6), plansize (7), growth (8), cpu (c), profile, and the soak retention
(s), which runs only when named (``make soak`` does). The peers and profilers of
``bench/requirements-peers.txt`` are installed into this interpreter on first use, and the wheel
of seed 004's TaskQueue is unzipped into the virtualenv (``bench/taskqueue.py``); a peer whose
install fails is skipped with the reason. Figures are noisy on a busy machine: each ratio
compares with a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-peers.txt"

#: name -> (number, module); run in this order.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "baselines": ("0", "bench.baselines"),
    "commands": ("1", "bench.commands"),
    "transitions": ("2", "bench.transitions"),
    "rebuild": ("3", "bench.rebuild"),
    "scale": ("4", "bench.scale"),
    "longtask": ("5", "bench.longtask"),
    "postgres": ("6", "bench.postgres"),
    "plansize": ("7", "bench.plansize"),
    "growth": ("8", "bench.growth"),
    "cpu": ("c", "bench.cpu"),
    "profile": ("p", "bench.profile"),
    "retention": ("s", "bench.retention"),
}
#: Soaks run only when named (``make soak`` names them): they take minutes by design.
ONLY_WHEN_NAMED = {"retention"}
NEEDS_PEERS = {"transitions", "plansize", "profile"}


def _peers_missing() -> list[str]:
    missing = [
        module
        for module in (
            "langgraph",
            "langgraph.checkpoint.sqlite",
            "dbos",
            "pyinstrument",
            "loguru",
            "rich",
        )
        if _find(module) is None
    ]
    if not (Path(sys.executable).parent / "py-spy").exists() and shutil.which("py-spy") is None:
        missing.append("py-spy")
    return missing


def _find(module: str) -> Any:
    try:
        return importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None


def ensure_peers() -> None:
    _ensure_requirements()
    from bench import taskqueue

    reason = taskqueue.ensure()  # the wheel of seed 004's queue, unzipped into the venv
    if reason is not None:
        print(f"  seed 004's TaskQueue will be skipped: {reason}")


def _ensure_requirements() -> None:
    missing = _peers_missing()
    if not missing:
        return
    print(f"installing the bench-only peers ({', '.join(missing)} missing) from {REQUIREMENTS}")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(f"  pip install failed (exit {done.returncode}); the missing peers will be skipped:")
        print("  " + "\n  ".join(done.stderr.strip().splitlines()[-5:]))
    importlib.invalidate_caches()


def _scratch_dir() -> Path:
    """Where every benchmark keeps its stores and peers' files: ``BENCH_TMPDIR``, else the
    project's ``var/bench``, on the disk where ``make run`` keeps its data by default. Not the
    system's temporary directory: it may be a tmpfs (an fsync there costs nothing, so durable
    writes would look free), and on the 2-core CI machines ``/tmp`` is an ext4 directory where
    each ``mkdir`` (one per task, its workspace) took 0.3-0.5 ms against 20 us elsewhere on the
    same disk. Every baseline writes to the same place, so the ratios stay like for like."""
    path = Path(os.environ.get("BENCH_TMPDIR") or HERE.parent / "var" / "bench")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(path)  # children: the service under test, pip, the peers
    tempfile.tempdir = str(path)
    return path


def _resolve(names: list[str]) -> list[str]:
    by_number = {number: name for name, (number, _) in BENCHMARKS.items()}
    chosen: list[str] = []
    for raw in names:
        name = by_number.get(raw, raw)
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {raw!r}; choose from {', '.join(BENCHMARKS)}")
        chosen.append(name)
    if not chosen:
        return [name for name in BENCHMARKS if name not in ONLY_WHEN_NAMED]
    return [name for name in BENCHMARKS if name in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="short runs (and scale to 10,000)")
    args = parser.parse_args(argv)
    os.chdir(HERE.parent)
    scratch = _scratch_dir()
    names = _resolve(args.names)
    if NEEDS_PEERS & set(names):
        ensure_peers()
    load = os.getloadavg()
    print(
        f"Baton benchmarks{' (quick)' if args.quick else ''}: {', '.join(names)}\n"
        f"  {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start; files in {scratch}"
    )
    print("  figures are noisy when other work runs on the machine: compare ratios, not rates")
    results: dict[str, Any] = {}
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][1])
        runner: Callable[..., dict[str, Any]] = module.run
        begin = time.perf_counter()
        try:
            results[name] = runner(quick=args.quick, sqlite=results.get("commands"))
        except Exception:  # one failing benchmark must not hide the others' figures
            failed.append(name)
            print(f"  FAILED: {name}")
            traceback.print_exc(file=sys.stdout)
        print(f"  ({name}: {time.perf_counter() - begin:.0f} s)", flush=True)
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s; load average now "
        f"{os.getloadavg()[0]:.2f}" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
