"""Terminal rendering of Baton's replies: task trees, timelines, tables and progress lines.

Plain ANSI colours, only on a terminal and never when ``NO_COLOR`` is set (``FORCE_COLOR``
forces them); Unicode glyphs only when the output encoding can carry them.
(Just over 500 lines: every CLI view's rendering in one place, so they share one style.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}

UNICODE_GLYPHS = {
    "completed": "✔",
    "current": "▶",
    "pending": "○",
    "failed": "✖",
    "skipped": "↷",
    "cancelled": "⊘",
    "tee": "├─",
    "elbow": "└─",
    "pipe": "│ ",
    "arrow": "→",
    "trigger": "⏰",
    "bar_full": "█",
    "bar_empty": "░",
}
ASCII_GLYPHS = {
    "completed": "+",
    "current": ">",
    "pending": "o",
    "failed": "x",
    "skipped": "~",
    "cancelled": "-",
    "tee": "|-",
    "elbow": "`-",
    "pipe": "| ",
    "arrow": "->",
    "trigger": "!",
    "bar_full": "#",
    "bar_empty": ".",
}

STEP_COLOURS = {
    "completed": "green",
    "current": "cyan",
    "pending": "",
    "failed": "red",
    "skipped": "dim",
    "cancelled": "dim",
}
TASK_COLOURS = {
    "queued": "yellow",
    "running": "cyan",
    "completed": "green",
    "error": "red",
    "cancelled": "magenta",
}


@dataclass(frozen=True)
class Style:
    """How to draw: with colours or not, with Unicode glyphs or ASCII ones."""

    colour: bool = False
    unicode: bool = True

    @classmethod
    def for_stream(cls, stream: TextIO, environ: Mapping[str, str] | None = None) -> Style:
        env = os.environ if environ is None else environ
        if env.get("NO_COLOR"):
            colour = False
        elif env.get("FORCE_COLOR"):
            colour = True
        else:
            isatty = getattr(stream, "isatty", None)
            colour = bool(isatty and isatty()) and env.get("TERM") != "dumb"
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "".join(UNICODE_GLYPHS.values()).encode(encoding)
            unicode = True
        except (UnicodeEncodeError, LookupError):
            unicode = False
        return cls(colour=colour, unicode=unicode)

    def paint(self, text: str, *names: str) -> str:
        codes = [CODES[n] for n in names if n]
        if not self.colour or not codes:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def glyph(self, name: str) -> str:
        return (UNICODE_GLYPHS if self.unicode else ASCII_GLYPHS)[name]


def short(value: Any, limit: int = 80) -> str:
    """A value as one line of JSON (strings as they are), cut at ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clock(timestamp: float | None) -> str:
    if timestamp is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


#: Step statuses a count names besides ``completed``, in the order it names them.
OTHER_COUNTED = ("skipped", "cancelled", "failed")


def step_counts(statuses: Iterable[str] | Mapping[str, int], total: int | None = None) -> str:
    """``1/4 completed, 3 cancelled``: completed steps out of all, then the skipped, cancelled
    and failed ones (a cancelled step is not a done one). Takes statuses, or counts by status."""
    if isinstance(statuses, Mapping):
        counts = {k: int(v) for k, v in statuses.items()}
    else:
        counts = {}
        for status in statuses:
            counts[status] = counts.get(status, 0) + 1
    whole = sum(counts.values()) if total is None else total
    parts = [f"{counts.get('completed', 0)}/{whole} completed"]
    parts += [f"{counts[k]} {k}" for k in OTHER_COUNTED if counts.get(k)]
    return ", ".join(parts)


def task_status(status: str, style: Style) -> str:
    return style.paint(status, TASK_COLOURS.get(status, ""), "bold")


def step_state(step: Mapping[str, Any], style: Style) -> str:
    """``completed``, ``current``; a pending step as ``ready``, ``blocked`` (by a step it depends
    on) or ``waiting`` (on nothing but its task, e.g. a queued one), coloured."""
    status = str(step.get("status", "?"))
    text = status
    colour = STEP_COLOURS.get(status, "")
    if status == "pending":
        if step.get("ready"):
            text, colour = "ready", "yellow"
        elif step.get("blocked") is False:  # nothing it depends on is left: its task waits
            text, colour = "waiting", "dim"
        else:
            text, colour = "blocked", "dim"
    return style.paint(text, colour)


def step_glyph(step: Mapping[str, Any], style: Style) -> str:
    status = str(step.get("status", "pending"))
    name = status if status in STEP_COLOURS else "pending"
    colour = "yellow" if status == "pending" and step.get("ready") else STEP_COLOURS.get(name, "")
    return style.paint(style.glyph(name), colour)


def step_details(
    step: Mapping[str, Any], style: Style, shared_context: Mapping[str, Any] | None = None
) -> list[str]:
    """The lines under a step in a tree: dependencies, claims, results, failures, and the
    step's context (its dependencies' results) but for the entries in ``shared_context``."""
    shared_context = shared_context or {}
    lines: list[str] = []
    if step.get("description"):
        lines.append(style.paint(short(step["description"], 100), "dim"))
    deps = step.get("depends_on") or []
    if deps:
        lines.append(f"after {', '.join(deps)}")
    if step.get("claimed_by"):
        claim = f"claimed by {step['claimed_by']}"
        if step.get("claim_id"):
            claim += f" (claim {step['claim_id']}"
            if step.get("lease_expires_at"):
                until = time.strftime("%H:%M:%S", time.localtime(float(step["lease_expires_at"])))
                claim += f", lease until {until}"
            claim += ")"
        lines.append(claim)
    if (step.get("attempts") or 0) > 1:
        lines.append(f"attempt {step['attempts']}")
    if step.get("result") is not None:
        lines.append(f"result: {short(step['result'])}")
    if step.get("failure_message"):
        lines.append(style.paint(f"failed: {step['failure_message']}", "red"))
    for key, value in (step.get("context") or {}).items():
        if key not in shared_context:  # the task's entries are shown once, on the task
            lines.append(f"context {key} = {short(value)}")
    return lines


def task_tree(view: Mapping[str, Any], style: Style) -> str:
    """A task and its steps as a tree, with statuses, readiness, claims and results."""
    steps = list(view.get("steps") or [])
    head = (
        f"{style.paint(str(view.get('task_name')), 'bold')} "
        f"{style.paint(str(view.get('task_id')), 'dim')}  "
        f"{task_status(str(view.get('status')), style)}  "
        f"steps {step_counts(str(s.get('status')) for s in steps)}"
    )
    lines = [head]
    meta = [f"session {view.get('session_id')}", f"priority {view.get('priority')}"]
    meta.append(f"version {view.get('version')}")
    lines.append(style.paint("  " + " · ".join(meta), "dim"))
    if view.get("goal"):
        lines.append(f"  goal: {short(view['goal'], 100)}")
    if view.get("message"):
        lines.append(f"  message: {short(view['message'], 100)}")
    context: Mapping[str, Any] = view.get("context") or {}
    for key, value in context.items():
        lines.append(f"  context {key} = {short(value, 100)}")
    trigger = view.get("trigger")
    if trigger:
        lines.append(
            f"  {style.glyph('trigger')} trigger {trigger.get('trigger_id')} for "
            f"{trigger.get('step_id')} at {clock(trigger.get('fire_at'))}"
        )
    width = max((len(str(s.get("step_name", ""))) for s in steps), default=0)
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        branch = style.glyph("elbow" if last else "tee")
        name = str(step.get("step_name", "")).ljust(width)
        if step.get("status") == "current":
            name = style.paint(name, "bold")
        lines.append(f"{branch} {step_glyph(step, style)} {name}  {step_state(step, style)}")
        indent = "   " if last else style.glyph("pipe") + " "
        for detail in step_details(step, style, context):
            lines.append(f"{indent}    {detail}")
    return "\n".join(lines)


def step_summary(step: Mapping[str, Any] | None, style: Style) -> str:
    """One line about a step: glyph, name, state, id."""
    if not step:
        return "no step"
    return (
        f"{step_glyph(step, style)} {style.paint(str(step.get('step_name')), 'bold')}  "
        f"{step_state(step, style)}  {style.paint(str(step.get('step_id')), 'dim')}"
    )


def trigger_line(trigger: Mapping[str, Any], style: Style) -> str:
    return (
        f"{style.glyph('trigger')} trigger {trigger.get('trigger_id')} "
        f"for {trigger.get('step_id')} (session {trigger.get('session_id')}, "
        f"priority {trigger.get('priority')}) at {clock(trigger.get('fire_at'))}: "
        f"{short(trigger.get('next_action_description', ''), 100)}"
    )


def advance_reply(reply: Mapping[str, Any], style: Style) -> str:
    """The reply of task.start / task.next, in words. The reply's ``status: queued`` means the
    trigger is queued (the contract's word), not the task: the task is running."""
    status = str(reply.get("status"))
    step = reply.get("step") or {}
    trigger = reply.get("trigger") or {}
    if status == "queued":
        due = f", due {clock(trigger['fire_at'])}" if trigger.get("fire_at") else ""
        head = f"trigger scheduled for step {style.paint(str(step.get('step_name')), 'bold')}{due}"
    elif status == "completed":
        head = f"task {task_status('completed', style)}: no step left"
    elif status == "no_next_step":
        head = "no step is ready: the task is running, its next steps wait (e.g. on a failed one)"
    else:
        head = f"status: {style.paint(status, 'bold')}"
    lines = [head]
    if reply.get("step"):
        lines.append("step:   " + step_summary(reply["step"], style))
    if reply.get("trigger"):
        lines.append(trigger_line(reply["trigger"], style))
    return "\n".join(lines)


def claim_reply(reply: Mapping[str, Any], style: Style) -> str:
    step = reply.get("step")
    if not step:
        return f"nothing to claim: queue is {style.paint(str(reply.get('queue_status')), 'bold')}"
    lines = ["claimed " + step_summary(step, style), f"  task {step.get('task_id')}"]
    lines += [f"  {d}" for d in step_details(step, style)]
    if step.get("action_instruction"):
        lines.append(f"  action: {short(step['action_instruction'], 100)}")
    if step.get("validation_instruction"):
        lines.append(f"  validate: {short(step['validation_instruction'], 100)}")
    return "\n".join(lines)


def step_reply(reply: Mapping[str, Any], style: Style) -> str:
    """The reply of step.complete / fail / skip / retry."""
    lines = [step_summary(reply, style)]
    lines += [f"  {d}" for d in step_details(reply, style) if not d.startswith("after ")]
    if reply.get("task_status"):
        lines.append(f"  task is {task_status(str(reply['task_status']), style)}")
    return "\n".join(lines)


def diff_lines(diff: Mapping[str, Iterable[str]]) -> str:
    parts = [f"{k}: {', '.join(v)}" for k, v in diff.items() if v]
    return "plan revised: " + ("; ".join(parts) if parts else "no change")


def event_line(event: Mapping[str, Any], style: Style) -> str:
    """One history or progress event: time, version, type, display message."""
    kind = str(event.get("type", "?"))
    colour = {
        "StepCompleted": "green",
        "StepFailed": "red",
        "StepStarted": "cyan",
        "Ended": "bold",
        "TriggerScheduled": "yellow",
    }.get(kind, "")
    return (
        f"{style.paint(clock(event.get('timestamp')), 'dim')}  "
        f"v{str(event.get('version', '?')).ljust(3)} "
        f"{style.paint(kind.ljust(16), colour)} {event.get('display_message', '')}"
    )


def timeline(reply: Mapping[str, Any], style: Style) -> str:
    events = list(reply.get("events") or [])
    lines = [f"{style.paint(str(reply.get('task_id')), 'bold')}: {len(events)} events"]
    lines += [event_line(e, style) for e in events]
    return "\n".join(lines)


def table(rows: list[list[str]], headers: list[str], style: Style) -> str:
    """Left-aligned columns; cells may hold ANSI codes (width is measured without them)."""
    import re

    bare = re.compile(r"\x1b\[[0-9;]*m")
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(bare.sub("", cell)))

    def line(cells: list[str]) -> str:
        padded = [c + " " * (widths[i] - len(bare.sub("", c))) for i, c in enumerate(cells)]
        return "  ".join(padded).rstrip()

    return "\n".join([style.paint(line(headers), "bold"), *(line(r) for r in rows)])


def tasks_table(tasks: list[Mapping[str, Any]], style: Style) -> str:
    if not tasks:
        return "no tasks"
    rows = []
    for t in tasks:
        counts = t.get("steps_by_status") or {}
        total = t.get("steps_total")
        rows.append(
            [
                str(t.get("task_id")),
                task_status(str(t.get("status")), style),
                str(t.get("session_id")),
                step_counts(counts, total).replace(" completed", "") if total is not None else "-",
                str(t.get("current_step") or "-"),
                when(t.get("updated_at") or t.get("created_at")),
            ]
        )
    return table(rows, ["TASK", "STATUS", "SESSION", "STEPS", "CURRENT", "UPDATED"], style)


def queue_view(reply: Mapping[str, Any], style: Style) -> str:
    steps = list(reply.get("steps") or [])
    triggers = list(reply.get("triggers") or [])
    out = []
    if steps:
        rows = [
            [
                str(s.get("step_id")),
                str(s.get("step_name")),
                step_state(s, style),
                str(s.get("priority", "-")),
                str(s.get("claimed_by") or "-"),
            ]
            for s in steps
        ]
        out.append(table(rows, ["STEP", "NAME", "STATE", "PRIORITY", "CLAIMED BY"], style))
    else:
        out.append("no ready steps")
    if triggers:
        out.append("")
        out.append(style.paint("pending triggers", "bold"))
        out += [trigger_line(t, style) for t in triggers]
    return "\n".join(out)


def _step_id(task_id: str, record: Mapping[str, Any]) -> str:
    """A step record's id: stored records since 0.2 leave it out (it is ``<task>.<index>``)."""
    step_id = record.get("step_id")
    return str(step_id) if step_id else f"{task_id}.{record.get('step_index')}"


class Progress:
    """Step statuses of one task followed from its events, for a progress bar."""

    def __init__(self) -> None:
        self.steps: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.task_status: str | None = None
        self.session_id: str | None = None
        self.task_name: str | None = None

    def load(self, view: Mapping[str, Any]) -> None:
        task_id = str(view.get("task_id"))
        for step in view.get("steps") or []:
            step_id = _step_id(task_id, step)
            self.steps[step_id] = step.get("status", "pending")
            self.names[step_id] = step["step_name"]
        self.task_status = view.get("status")
        self.session_id = view.get("session_id")
        self.task_name = view.get("task_name")

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        data = event.get("data") or {}
        step_id = event.get("step_id")
        if kind == "Created":
            self.load(data)
        elif kind == "PlanRevised":
            for record in data.get("added") or []:
                step_id = _step_id(str(event.get("task_id")), record)
                self.steps[step_id] = record.get("status", "pending")
                self.names[step_id] = record["step_name"]
        elif kind == "Started":
            self.task_status = "running"
        elif kind == "Ended":
            self.task_status = data.get("status")
        elif step_id and kind == "ClaimExpired":
            outcome = str(data.get("outcome"))
            self.steps[step_id] = {"ready": "pending", "failed": "failed"}.get(outcome, "current")
        elif step_id and kind in STEP_EVENT_STATUS:
            self.steps[step_id] = STEP_EVENT_STATUS[kind]

    @property
    def ended(self) -> bool:
        return self.task_status in ("completed", "error", "cancelled")

    def counts(self) -> tuple[int, int]:
        """Completed steps, and all steps (cancelled, skipped or failed ones are not done)."""
        done = sum(1 for s in self.steps.values() if s == "completed")
        return done, len(self.steps)

    def current(self) -> list[str]:
        return [self.names.get(k, k) for k, s in self.steps.items() if s == "current"]

    def bar(self, style: Style, width: int = 20) -> str:
        done, total = self.counts()
        filled = round(width * done / total) if total else 0
        bar = style.glyph("bar_full") * filled + style.glyph("bar_empty") * (width - filled)
        status = self.task_status or "?"
        current = ", ".join(self.current()) or "-"
        return (
            f"[{style.paint(bar, 'green')}] {step_counts(self.steps.values())}  "
            f"task {task_status(status, style)}  current: {current}"
        )


STEP_EVENT_STATUS = {
    "StepStarted": "current",
    "StepCompleted": "completed",
    "StepFailed": "failed",
    "StepSkipped": "skipped",
    "StepCancelled": "cancelled",
    "StepRetried": "pending",
    "StepAttemptFailed": "pending",
}


def progress_line(event: Mapping[str, Any], progress: Progress, style: Style) -> str:
    """One live line of ``baton watch``: time, ``[done/total]``, glyph, display message."""
    done, total = progress.counts()
    kind = str(event.get("type", ""))
    glyph_for = {
        "StepCompleted": ("completed", "green"),
        "StepStarted": ("current", "cyan"),
        "StepFailed": ("failed", "red"),
        "StepSkipped": ("skipped", "dim"),
        "StepCancelled": ("cancelled", "dim"),
        "StepRetried": ("pending", "yellow"),
        "TriggerScheduled": ("trigger", "yellow"),
    }
    name, colour = glyph_for.get(kind, ("", ""))
    mark = style.paint(style.glyph(name), colour) if name else " "
    if kind == "Ended":
        status = str((event.get("data") or {}).get("status", ""))
        mark = style.paint(
            style.glyph("completed" if status == "completed" else "failed"),
            TASK_COLOURS.get(status, ""),
        )
    return (
        f"{style.paint(clock(event.get('timestamp')), 'dim')} "
        f"[{done}/{total}] {mark} {event.get('display_message', '')}"
    )


def error_line(code: int, reason: str, message: str) -> str:
    """The contract's error as one line: ``error 409 invalid_transition: cannot ...``."""
    return f"error {code} {reason}: {message}"
