"""Plans in one line, for every test layer: ``seq("a", "b")`` and ``graph(a=[], b=["a"])``."""

from __future__ import annotations

from typing import Any


def seq(*names: str, **plan: Any) -> dict[str, Any]:
    """A sequential plan of steps with these names (no step has a ``depends_on`` key), with the
    plan's other fields (``goal``, ``context``) as given."""
    return {**plan, "steps": [{"step_name": n, "description": f"do {n}"} for n in names]}


def graph(**deps: list[str]) -> dict[str, Any]:
    """A dependency-graph plan, in keyword order: ``graph(a=[], b=["a"])``."""
    return {
        "steps": [
            {"step_name": n, "description": f"do {n}", "depends_on": list(d)}
            for n, d in deps.items()
        ]
    }
