"""The two JetStream streams Baton publishes to, created when missing and reconciled at start."""

from __future__ import annotations

import logging
import re
from typing import Any

import nats.js.errors
from nats.js.api import StorageType, StreamConfig

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 3600.0
"""How long JetStream remembers a message id. A relay that crashed after publishing and before
recording its position republishes the same ids when it restarts: they are dropped as duplicates
if the restart comes within this window. Longer costs server memory (one entry per message
published in the window: at 1,000 events/s, an hour is 3.6 million ids); shorter risks a
duplicate after a long outage of the event store or of the relay between publish and record."""


def stream_names(prefix: str = "baton") -> tuple[str, str]:
    """``(progress stream, triggers stream)`` for a subject prefix.

    ``BATON_PROGRESS`` / ``BATON_TRIGGERS`` for the default prefix ``baton``; any other prefix
    gets a suffix, ``BATON_PROGRESS_<PREFIX>``, upper-cased with every character a stream name
    cannot hold (``.``, ``*``, ``>``, spaces...) turned into ``_``, so several deployments with
    their own prefixes can share one server. (Two prefixes differing only in such characters,
    ``a.b`` and ``a_b``, would share streams: don't do that.)
    """
    if prefix == "baton":
        return "BATON_PROGRESS", "BATON_TRIGGERS"
    suffix = re.sub(r"[^A-Za-z0-9_-]", "_", prefix).upper()
    return f"BATON_PROGRESS_{suffix}", f"BATON_TRIGGERS_{suffix}"


def stream_configs(prefix: str = "baton") -> list[StreamConfig]:
    """The two streams, on file storage, their subjects apart from the command subjects."""
    progress, triggers = stream_names(prefix)
    return [
        StreamConfig(
            name=progress,
            description="Baton: every task event, in order (subject <prefix>.progress.<task_id>)",
            subjects=[f"{prefix}.progress.>"],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=triggers,
            description="Baton: each trigger when it is due (subject <prefix>.trigger.<session>)",
            subjects=[f"{prefix}.trigger.>"],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
    ]


async def ensure_streams(js: Any, prefix: str = "baton") -> None:
    """Creates the progress and trigger streams if missing; updates their subjects and
    duplicate window if they exist (other settings an operator chose, like limits, are kept)."""
    for wanted in stream_configs(prefix):
        assert wanted.name is not None
        try:
            info = await js.stream_info(wanted.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config=wanted)
                log.info("created stream %s for %s", wanted.name, wanted.subjects)
                continue
            except nats.js.errors.BadRequestError:
                # Another instance created it meanwhile: fall through to the update.
                info = await js.stream_info(wanted.name)
        current = info.config
        if (
            sorted(current.subjects or []) != sorted(wanted.subjects or [])
            or current.duplicate_window != wanted.duplicate_window
        ):
            current.subjects = wanted.subjects
            current.duplicate_window = wanted.duplicate_window
            await js.update_stream(config=current)
            log.info("updated stream %s: subjects %s", wanted.name, wanted.subjects)


__all__ = ["DUPLICATE_WINDOW_S", "ensure_streams", "stream_configs", "stream_names"]
