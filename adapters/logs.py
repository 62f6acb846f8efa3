"""Logging set-up: text lines by default, JSON lines with ``BATON_LOG_FORMAT=json``.

A request's handling binds its subject, command id and task id (``bind``); every line logged
while it is handled carries them (a context variable: each request runs in a task of its own,
so concurrent requests never mix their fields).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Any

#: The fields of the request being handled (empty outside one).
_fields: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "baton_log_fields", default=None
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind(**fields: Any) -> None:
    """Adds ``fields`` (None values are left out) to every line logged from now on in the
    current task (a request's own task)."""
    current = dict(_fields.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    _fields.set(current)


def bound() -> dict[str, Any]:
    """The fields bound in the current context."""
    return dict(_fields.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message``, the bound fields
    (``subject``, ``command_id``, ``task_id``) and ``exc_info`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_fields.get() or {})
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _TextWithFields(logging.Formatter):
    """The text format, with the bound fields appended as ``key=value``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields.get()
        if fields:
            text += " [" + " ".join(f"{k}={v}" for k, v in fields.items()) + "]"
        return text


def configure(default_level: str = "INFO", environ: dict[str, str] | None = None) -> None:
    """Logs to stderr as ``BATON_LOG_FORMAT`` (``text``, the default, or ``json``) says, at
    ``BATON_LOG_LEVEL``."""
    env = os.environ if environ is None else environ
    kind = (env.get("BATON_LOG_FORMAT") or "text").strip().lower()
    if kind not in ("text", "json"):
        raise ValueError(f"BATON_LOG_FORMAT={kind!r}: expected text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if kind == "json" else _TextWithFields(TEXT_FORMAT))
    logging.basicConfig(
        level=(env.get("BATON_LOG_LEVEL") or default_level).upper(), handlers=[handler]
    )


__all__ = ["JsonFormatter", "bind", "bound", "configure"]
