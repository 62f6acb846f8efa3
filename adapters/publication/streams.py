"""The two JetStream streams Baton publishes to, created when missing and reconciled at start.

Baton owns a few settings of each stream (subjects, duplicate window, replicas, retention, max
age and size: see ``StreamPolicy``). At every start they are compared with the stream as it is:
a difference is changed on the server when NATS allows it (logged), and when NATS refuses, the
start fails with ``StreamSettingsError`` naming the setting. Nothing is silently ignored. Other
settings an operator chose (placement, compression, ...) are kept.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

if TYPE_CHECKING:
    from baton.adapters.config import Settings

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_S = 3600.0
"""How long JetStream remembers a message id. A relay that crashed after publishing and before
recording its position republishes the same ids when it restarts: they are dropped as duplicates
if the restart comes within this window. Longer costs server memory (one entry per message
published in the window: at 1,000 events/s, an hour is 3.6 million ids); shorter risks a
duplicate after a long outage of the event store or of the relay between publish and record.
A stream whose max age is shorter gets that as its window (JetStream requires it)."""


@dataclass(frozen=True)
class StreamPolicy:
    """The stream settings Baton owns (from ``Settings``; see its docstrings)."""

    replicas: int = 1
    progress_max_age_s: float = 7 * 86400.0
    progress_max_bytes: int = -1
    trigger_max_age_s: float = 86400.0
    trigger_retention: str = "limits"

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamPolicy:
        return cls(
            replicas=settings.stream_replicas,
            progress_max_age_s=settings.progress_max_age_s,
            progress_max_bytes=settings.progress_max_bytes,
            trigger_max_age_s=settings.trigger_max_age_s,
            trigger_retention=settings.trigger_retention,
        )


class StreamSettingsError(RuntimeError):
    """A stream differs from Baton's settings and NATS refused to change it."""


#: The environment variable behind each stream field Baton owns, per stream kind.
_SETTING = {
    ("progress", "num_replicas"): "BATON_STREAM_REPLICAS",
    ("triggers", "num_replicas"): "BATON_STREAM_REPLICAS",
    ("progress", "max_age"): "BATON_PROGRESS_MAX_AGE",
    ("triggers", "max_age"): "BATON_TRIGGER_MAX_AGE",
    ("progress", "max_bytes"): "BATON_PROGRESS_MAX_BYTES",
    ("triggers", "retention"): "BATON_TRIGGER_RETENTION",
    ("progress", "retention"): "the progress stream's retention (always limits)",
    ("progress", "subjects"): "BATON_SUBJECT_PREFIX",
    ("triggers", "subjects"): "BATON_SUBJECT_PREFIX",
    ("progress", "duplicate_window"): "the duplicate window (Baton's own)",
    ("triggers", "duplicate_window"): "the duplicate window (Baton's own)",
}

#: The fields reconciled, in the order they are reported.
_OWNED = ("subjects", "duplicate_window", "num_replicas", "retention", "max_age", "max_bytes")


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


def _window(max_age_s: float) -> float:
    return min(DUPLICATE_WINDOW_S, max_age_s) if max_age_s > 0 else DUPLICATE_WINDOW_S


def stream_configs(prefix: str = "baton", policy: StreamPolicy | None = None) -> list[StreamConfig]:
    """The two streams, on file storage, their subjects apart from the command subjects."""
    policy = policy or StreamPolicy()
    progress, triggers = stream_names(prefix)
    return [
        StreamConfig(
            name=progress,
            description="Baton: every task event, in order (subject <prefix>.progress.<task_id>)",
            subjects=[f"{prefix}.progress.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            num_replicas=policy.replicas,
            max_age=policy.progress_max_age_s,
            max_bytes=policy.progress_max_bytes,
            duplicate_window=_window(policy.progress_max_age_s),
        ),
        StreamConfig(
            name=triggers,
            description="Baton: each trigger when it is due (subject <prefix>.trigger.<session>)",
            subjects=[f"{prefix}.trigger.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy(policy.trigger_retention),
            num_replicas=policy.replicas,
            max_age=policy.trigger_max_age_s,
            max_bytes=-1,
            duplicate_window=_window(policy.trigger_max_age_s),
        ),
    ]


def _normal(field: str, value: Any) -> Any:
    """A field's value in a form two configs can be compared in (server defaults filled in)."""
    if field == "subjects":
        return sorted(value or [])
    if field in ("max_age", "duplicate_window"):
        return round(float(value or 0) * 1000)  # milliseconds: floats from nanoseconds
    if field == "num_replicas":
        return int(value or 1)
    if field == "max_bytes":
        return -1 if value is None or int(value) <= 0 else int(value)
    if field == "retention":
        return RetentionPolicy(value or "limits").value
    return value


def differences(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    """The fields Baton owns that differ between the stream as it is and as wanted."""
    return [f for f in _OWNED if _normal(f, getattr(current, f)) != _normal(f, getattr(wanted, f))]


def _kind(config: StreamConfig) -> str:
    return "progress" if (config.name or "").startswith("BATON_PROGRESS") else "triggers"


def _shown(field: str, value: Any) -> str:
    value = _normal(field, value)
    if field in ("max_age", "duplicate_window"):
        return "unlimited" if value == 0 else f"{value / 1000:g}s"
    if field == "max_bytes" and value == -1:
        return "unlimited"
    return str(value)


def _describe(current: StreamConfig, wanted: StreamConfig, fields: list[str]) -> str:
    kind = _kind(wanted)
    return "; ".join(
        f"{f} is {_shown(f, getattr(current, f))}, {_SETTING[(kind, f)]} asks "
        f"{_shown(f, getattr(wanted, f))}"
        for f in fields
    )


#: Errors of a JetStream that is not ready yet (a cluster electing its meta leader, a server
#: starting): ``ensure_streams`` tries again for a while.
_NOT_READY = (
    nats.js.errors.ServiceUnavailableError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    asyncio.TimeoutError,
)


async def ensure_streams(
    js: Any, prefix: str = "baton", policy: StreamPolicy | None = None, *, wait_s: float = 30.0
) -> None:
    """Creates the progress and trigger streams if missing, and reconciles the settings Baton
    owns on existing ones; raises ``StreamSettingsError`` when NATS refuses either. While
    JetStream is not ready (a cluster electing a leader), tries again for up to ``wait_s``."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            await _ensure_streams(js, prefix, policy)
            return
        except _NOT_READY as error:
            if time.monotonic() + delay > deadline:
                raise
            log.info("JetStream not ready (%r); trying again in %.1f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _ensure_streams(js: Any, prefix: str, policy: StreamPolicy | None) -> None:
    for wanted in stream_configs(prefix, policy):
        assert wanted.name is not None
        try:
            info = await js.stream_info(wanted.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config=wanted)
                log.info(
                    "created stream %s for %s (replicas %s, max age %s)",
                    wanted.name,
                    wanted.subjects,
                    wanted.num_replicas,
                    _shown("max_age", wanted.max_age),
                )
                continue
            except nats.js.errors.ServiceUnavailableError:
                raise
            except nats.js.errors.APIError as refused:
                # Another instance created it meanwhile (fall through to the reconciliation),
                # or the server cannot hold such a stream at all.
                try:
                    info = await js.stream_info(wanted.name)
                except nats.js.errors.NotFoundError:
                    raise StreamSettingsError(
                        f"NATS refused to create stream {wanted.name} "
                        f"({refused.description or refused}): check "
                        f"{_settings_of(wanted)}"
                    ) from None
        await _reconcile(js, info.config, wanted)


def _settings_of(wanted: StreamConfig) -> str:
    kind = _kind(wanted)
    names = {_SETTING[(kind, f)] for f in _OWNED if f != "subjects" and (kind, f) in _SETTING}
    return ", ".join(sorted(n for n in names if n.startswith("BATON_")))


async def _reconcile(js: Any, current: StreamConfig, wanted: StreamConfig) -> None:
    fields = differences(current, wanted)
    if not fields:
        return
    what = _describe(current, wanted, fields)
    for f in fields:
        setattr(current, f, getattr(wanted, f))
    try:
        await js.update_stream(config=current)
    except nats.js.errors.ServiceUnavailableError:
        raise
    except nats.js.errors.APIError as refused:
        raise StreamSettingsError(
            f"stream {wanted.name} differs from Baton's settings and NATS refused to change it "
            f"({refused.description or refused}): {what}. Set the setting back to match the "
            f"stream, or remove the stream (`nats stream rm {wanted.name}`; its messages are "
            f"lost, the event store keeps the record) so that Baton creates it anew."
        ) from None
    log.warning("updated stream %s to Baton's settings: %s", wanted.name, what)


__all__ = [
    "DUPLICATE_WINDOW_S",
    "StreamPolicy",
    "StreamSettingsError",
    "differences",
    "ensure_streams",
    "stream_configs",
    "stream_names",
]
