"""Timing helpers and the one way every benchmark prints its figures.

Each figure is measured over several runs and printed as min / median / max; a ratio is always
against a baseline measured in the same run, on the same machine, at the same moment, so that a
busy machine slows both sides alike. Nothing here asserts: a goal is printed as met or missed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Series:
    """Several measurements of one figure (a rate, or a latency in seconds)."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")

    def line(self) -> str:
        n = len(self.values)
        return (
            f"  {self.name:<46} median {fmt(self.median):>10} {self.unit:<12}"
            f" (min {fmt(self.min)}, max {fmt(self.max)}, n={n})"
        )


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ms(seconds: float) -> float:
    return seconds * 1000.0


def percentile(values: Iterable[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def header(title: str) -> None:
    print()
    print(f"== {title}")


def note(text: str) -> None:
    print(f"  {text}")


def goal(label: str, value: float, target: float, *, higher_is_better: bool = True) -> bool:
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    verdict = "MET" if met else "MISSED"
    print(f"  GOAL {label}: {fmt(value)} (goal {sign} {fmt(target)}) -> {verdict}")
    return met


def ratio(label: str, value: float, baseline: float) -> float:
    r = value / baseline if baseline else float("nan")
    print(f"  ratio {label}: {fmt(r)}")
    return r


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.elapsed`` in seconds."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.elapsed = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed = time.perf_counter() - self.start
