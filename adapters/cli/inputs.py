"""Reading what a user typed: JSON-or-text values, plans (a file or ``--step`` options), and
step references (an id, a name or an index)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from baton.adapters.cli.common import EXIT_USAGE, CliError

if TYPE_CHECKING:
    from baton.adapters.client import BatonClient


def parse_value(text: str) -> Any:
    """JSON when the text parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_plan_file(path: str) -> dict[str, Any]:
    """A plan from a YAML or JSON file (``-`` reads stdin); a bare list is the plan's steps."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"cannot read plan file {path}: {error.strerror or error}") from None
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as error:
        raise CliError(f"plan file {path} is neither YAML nor JSON: {error}") from None
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict):
        raise CliError(f"plan file {path} must hold a plan object or a list of steps")
    return data


def parse_step_option(text: str) -> dict[str, Any]:
    """``"name: description"`` (the description is optional)."""
    name, sep, description = text.partition(":")
    if not name.strip():
        raise CliError(f"--step {text!r}: expected 'name: description'")
    step: dict[str, Any] = {"step_name": name.strip()}
    if sep:
        step["description"] = description.strip()
    return step


def parse_depends_option(text: str) -> tuple[str, list[str]]:
    """``"name=dep1,dep2"`` (``"name="`` for none)."""
    name, sep, deps = text.partition("=")
    if not sep or not name.strip():
        raise CliError(f"--depends {text!r}: expected 'step=dep1,dep2'")
    return name.strip(), [d.strip() for d in deps.split(",") if d.strip()]


def plan_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The plan given by ``--plan FILE`` or by ``--step``/``--depends`` options, or None."""
    steps_opt: list[str] = getattr(args, "step", None) or []
    depends_opt: list[str] = getattr(args, "depends", None) or []
    plan_file: str | None = getattr(args, "plan", None)
    if plan_file and (steps_opt or depends_opt):
        raise CliError("give either --plan FILE or --step options, not both")
    if plan_file:
        plan = load_plan_file(plan_file)
    elif steps_opt:
        steps = [parse_step_option(s) for s in steps_opt]
        if depends_opt:
            deps = dict(parse_depends_option(d) for d in depends_opt)
            names = {s["step_name"] for s in steps}
            unknown = sorted(set(deps) - names)
            if unknown:
                raise CliError(f"--depends names unknown step {', '.join(unknown)}")
            for step in steps:
                step["depends_on"] = deps.get(step["step_name"], [])
        plan = {"steps": steps}
    elif depends_opt:
        raise CliError("--depends needs --step options")
    else:
        return None
    goal = getattr(args, "goal", None)
    if goal is not None:
        plan["goal"] = goal
    return plan


async def resolve_step(client: BatonClient, task_id: str, step: str) -> str:
    """A step id from a step id, a step name or a step index of the task.

    A name wins over an index: plans often name their steps "1", "2", "3", and then
    ``baton step complete TASK 1`` means the step named "1" (an index is what is left when no
    step has that name)."""
    if step.startswith(f"{task_id}."):
        return step
    view = await client.task(task_id=task_id)
    steps = view.get("steps", [])
    for candidate in steps:
        if candidate.get("step_name") == step:
            return str(candidate["step_id"])
    if step.isdigit():
        for candidate in steps:
            if candidate.get("step_index") == int(step):
                return str(candidate["step_id"])
    names = ", ".join(str(s.get("step_name")) for s in steps)
    kind = "no step named or at index" if step.isdigit() else "no step"
    raise CliError(
        f"error 404 not_found: task {task_id!r} has {kind} {step!r} (steps: {names})", EXIT_USAGE
    )


def split_step_target(target: Sequence[str]) -> tuple[str, str]:
    """``TASK STEP`` or a lone ``STEP_ID`` (``<task_id>.<index>``)."""
    if len(target) == 2:
        return target[0], target[1]
    if len(target) == 1:
        task_id, dot, index = target[0].rpartition(".")
        if dot and task_id and index.isdigit():
            return task_id, target[0]
        raise CliError(f"give TASK STEP or a step id like <task_id>.0, not {target[0]!r}")
    raise CliError("give TASK STEP or a step id")
