"""Configuration from the environment, and the event store settings derived from it."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Settings:
    """Everything Baton reads from its environment."""

    nats_url: str = "nats://127.0.0.1:4222"
    """``BATON_NATS_URL``: where the NATS server is (``make run`` starts one when none answers)."""

    data_dir: Path = Path("./var")
    """``BATON_DATA_DIR``: the SQLite event store, views and the embedded nats-server's data."""

    postgres_url: str | None = None
    """``BATON_POSTGRES_URL``: when set, events and views live in this PostgreSQL database."""

    postgres_schema: str | None = None
    """``BATON_POSTGRES_SCHEMA``: a schema inside that database (default: the search path)."""

    subject_prefix: str = "baton"
    """``BATON_SUBJECT_PREFIX``: the first token of every subject Baton serves and publishes."""

    workspace_root: Path | None = None
    """``BATON_WORKSPACE_ROOT``: per-task working directories (default: under the data dir)."""

    keep_workspaces: frozenset[str] = field(
        default_factory=lambda: frozenset({"error", "cancelled"})
    )
    """``BATON_KEEP_WORKSPACES``: comma-separated end statuses whose directory is kept."""

    planner_timeout_s: float = 60.0
    """``BATON_PLANNER_TIMEOUT_S``: how long to wait for ``baton.planner.*``."""

    planner_concurrency: int = 64
    """``BATON_PLANNER_CONCURRENCY``: requests that may wait for the planner at once (at most
    half of those in flight); more are answered 503 at once, so a silent planner cannot stop
    other work."""

    nats_user: str | None = None
    """``BATON_NATS_USER`` / ``BATON_NATS_PASSWORD``: NATS user credentials."""

    nats_password: str | None = None
    nats_token: str | None = None
    """``BATON_NATS_TOKEN``: a NATS auth token."""

    nats_creds: str | None = None
    """``BATON_NATS_CREDS``: a NATS credentials (JWT + nkey seed) file."""

    nats_nkey_seed: str | None = None
    """``BATON_NATS_NKEY_SEED``: a file holding an nkey seed."""

    nats_tls_ca: str | None = None
    """``BATON_NATS_TLS_CA``: a CA bundle to verify the NATS server's TLS certificate."""

    nats_publisher_user: str | None = None
    """``BATON_NATS_PUBLISHER_USER`` / ``BATON_NATS_PUBLISHER_PASSWORD``: when set (or
    ``BATON_NATS_PUBLISHER_CREDS``), Baton publishes to its streams, and manages them, on a second
    connection with these credentials; the service's own connection then needs no right to
    publish there, only to answer requests (``allow_responses``). See README, Securing NATS."""

    nats_publisher_password: str | None = None
    nats_publisher_creds: str | None = None
    """``BATON_NATS_PUBLISHER_CREDS``: a credentials file for that second connection."""

    stream_replicas: int = 1
    """``BATON_STREAM_REPLICAS``: copies JetStream keeps of each Baton stream (1, 3 or 5 in a
    cluster of at least that many nodes). Bounds what a node loss can take away."""

    progress_max_age_s: float = 7 * 86400.0
    """``BATON_PROGRESS_MAX_AGE``: how long a progress message stays in the progress stream
    (seconds, or ``90s``/``30m``/``12h``/``7d``; ``0`` keeps them for ever). Bounds the stream's
    disk: the event store is the record, the stream a feed to follow."""

    progress_max_bytes: int = -1
    """``BATON_PROGRESS_MAX_BYTES``: the progress stream's size cap in bytes; the oldest
    messages go first (``-1``, the default: no cap, only the age bounds it)."""

    trigger_max_age_s: float = 86400.0
    """``BATON_TRIGGER_MAX_AGE``: how long a published trigger stays in the trigger stream if
    nobody consumes it (same format; default one day, ``0`` for ever)."""

    trigger_retention: str = "limits"
    """``BATON_TRIGGER_RETENTION``: ``limits`` (the default: triggers stay until their max age,
    every consumer sees every trigger) or ``workqueue`` (a trigger is also removed once a
    consumer acknowledged it; JetStream then allows only consumers with disjoint subjects, e.g.
    one per session). NATS cannot switch an existing stream to or from ``workqueue``: Baton
    then refuses to start and says so."""

    metrics_addr: str | None = None
    """``BATON_METRICS_ADDR``: where ``baton serve`` serves Prometheus metrics (``HOST:PORT``,
    page ``/metrics``; unset or empty: none)."""

    ui_addr: str | None = None
    """``BATON_UI_ADDR``: where ``baton serve`` serves the web dashboard (``HOST:PORT``; from the
    environment the default is ``127.0.0.1:8600``, and an empty value turns it off). Settings
    made in code default to no dashboard."""

    claim_lease_s: float = 300.0
    """``BATON_CLAIM_LEASE_S``: a claim's lease when ``step.claim`` names none (0 < s <= 86,400):
    a step whose holder neither completes nor heartbeats within it is handed out again."""

    idempotency_window_s: float = 86_400.0
    """``BATON_IDEMPOTENCY_WINDOW_S``: how long a command id's first reply is kept (a repeat
    after that runs as a new command), like JetStream's duplicate window."""

    timed_ids: bool | None = None
    """``BATON_TIMED_IDS``: whether new task ids carry their creation time, so the event store
    writes a task's events in time order (on a big store, a fraction of the pages per command).
    Decided as ``baton serve`` starts (``adapters/timedids.py``). Unset (None): yes for a store
    this release (or a later one) started empty or that ``1`` marked, no for a store an earlier
    release started on, which may still share it; ``1``: yes, and the store is marked for good;
    ``0``: no. Tasks of either kind are found whatever the setting."""

    publisher_process: bool = False
    """``BATON_PUBLISHER_PROCESS``: ``1`` (the default from the environment) runs the views'
    catch-up, the progress relay and the trigger scheduler in a process of their own beside the
    service, so replies do not wait on their CPU; ``0`` runs them in the service's process.
    Settings made in code default to the latter."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        data_dir = Path(env.get("BATON_DATA_DIR") or "./var")
        root = env.get("BATON_WORKSPACE_ROOT")
        keep = env.get("BATON_KEEP_WORKSPACES")
        return cls(
            nats_url=env.get("BATON_NATS_URL") or "nats://127.0.0.1:4222",
            data_dir=data_dir,
            postgres_url=env.get("BATON_POSTGRES_URL") or None,
            postgres_schema=env.get("BATON_POSTGRES_SCHEMA") or None,
            subject_prefix=env.get("BATON_SUBJECT_PREFIX") or "baton",
            workspace_root=Path(root) if root else None,
            keep_workspaces=(
                frozenset(s.strip() for s in keep.split(",") if s.strip())
                if keep is not None
                else frozenset({"error", "cancelled"})
            ),
            planner_timeout_s=float(env.get("BATON_PLANNER_TIMEOUT_S") or 60),
            planner_concurrency=int(env.get("BATON_PLANNER_CONCURRENCY") or 64),
            nats_user=env.get("BATON_NATS_USER") or None,
            nats_password=env.get("BATON_NATS_PASSWORD") or None,
            nats_token=env.get("BATON_NATS_TOKEN") or None,
            nats_creds=env.get("BATON_NATS_CREDS") or None,
            nats_nkey_seed=env.get("BATON_NATS_NKEY_SEED") or None,
            nats_tls_ca=env.get("BATON_NATS_TLS_CA") or None,
            nats_publisher_user=env.get("BATON_NATS_PUBLISHER_USER") or None,
            nats_publisher_password=env.get("BATON_NATS_PUBLISHER_PASSWORD") or None,
            nats_publisher_creds=env.get("BATON_NATS_PUBLISHER_CREDS") or None,
            ui_addr=env.get("BATON_UI_ADDR", "127.0.0.1:8600").strip() or None,
            metrics_addr=(env.get("BATON_METRICS_ADDR") or "").strip() or None,
            stream_replicas=_integer(env, "BATON_STREAM_REPLICAS", 1, minimum=1),
            progress_max_age_s=_duration(env, "BATON_PROGRESS_MAX_AGE", 7 * 86400.0),
            progress_max_bytes=_integer(env, "BATON_PROGRESS_MAX_BYTES", -1, minimum=-1),
            trigger_max_age_s=_duration(env, "BATON_TRIGGER_MAX_AGE", 86400.0),
            trigger_retention=_choice(
                env, "BATON_TRIGGER_RETENTION", "limits", ("limits", "workqueue")
            ),
            claim_lease_s=_bounded(env, "BATON_CLAIM_LEASE_S", 300.0, 0.0, 86_400.0),
            idempotency_window_s=_bounded(
                env, "BATON_IDEMPOTENCY_WINDOW_S", 86_400.0, 0.0, 365 * 86_400.0
            ),
            timed_ids=_switch(env, "BATON_TIMED_IDS"),
            publisher_process=_choice(env, "BATON_PUBLISHER_PROCESS", "1", ("1", "0")) == "1",
        )

    @property
    def nats_servers(self) -> list[str]:
        """The server URLs of ``nats_url`` (comma-separated: the members of a cluster)."""
        return nats_servers(self.nats_url)

    @property
    def workspaces(self) -> Path:
        return self.workspace_root or self.data_dir / "workspaces"


def nats_servers(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` as ``["nats://a:4222", "nats://b:4222"]``."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    return servers or ["nats://127.0.0.1:4222"]


class SettingError(ValueError):
    """An environment variable holds a value Baton cannot use; the message names it."""


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"`` or ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"`` as seconds (``ValueError`` else)."""
    text = text.strip().lower()
    unit = _UNITS.get(text[-1:]) if text else None
    number = float(text[:-1] if unit is not None else text)
    if number != number or number < 0 or number == float("inf"):
        raise ValueError(text)
    return number * (unit or 1.0)


def _duration(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return parse_duration(raw)
    except ValueError:
        raise SettingError(
            f"{name}={raw!r}: expected seconds or a duration like 90s, 30m, 12h, 7d (0: no limit)"
        ) from None


def _integer(env: dict[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise SettingError(f"{name}={raw!r}: expected at least {minimum}")
    return value


def _switch(env: dict[str, str], name: str) -> bool | None:
    """``1``: True, ``0``: False, unset or empty: None (the default decides)."""
    raw = _choice(env, name, "", ("1", "0"))
    return None if not raw else raw == "1"


def _choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise SettingError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw


def has_nats_credentials(settings: Settings) -> bool:
    """Whether Settings name any NATS credentials (user, token, credentials file or nkey)."""
    return any(
        (settings.nats_user, settings.nats_token, settings.nats_creds, settings.nats_nkey_seed)
    )


def publisher_settings(settings: Settings) -> Settings | None:
    """The settings of the connection that publishes to the streams, when it is a separate one
    (``BATON_NATS_PUBLISHER_*``): the same servers and TLS, its own credentials."""
    if settings.nats_publisher_user is None and settings.nats_publisher_creds is None:
        return None
    return replace(
        settings,
        nats_user=settings.nats_publisher_user,
        nats_password=settings.nats_publisher_password,
        nats_token=None,
        nats_creds=settings.nats_publisher_creds,
        nats_nkey_seed=None,
    )


def _bounded(env: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    """A duration setting with ``low < value <= high``; a clear error otherwise."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = parse_duration(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r}: expected seconds or a duration like 90s, 5m") from None
    if not low < value <= high:
        raise SettingError(f"{name}={raw!r}: must be more than {low:g} s and at most {high:g} s")
    return value


def nats_credentials(settings: Settings) -> dict[str, Any]:
    """The NATS credentials and TLS options Settings name, as ``nats.connect`` keywords (shared
    by the service and the CLI)."""
    options: dict[str, Any] = {}
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
    if settings.nats_token is not None:
        options["token"] = settings.nats_token
    if settings.nats_creds is not None:
        options["user_credentials"] = settings.nats_creds
    if settings.nats_nkey_seed is not None:
        options["nkeys_seed"] = settings.nats_nkey_seed
    if settings.nats_tls_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=settings.nats_tls_ca)
    return options


def postgres_params(url: str) -> dict[str, str]:
    """``postgresql://user:pw@host:port/db`` as eventsourcing's POSTGRES_* settings."""
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return {
        "POSTGRES_DBNAME": (parsed.path or "/").lstrip("/") or "postgres",
        "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parsed.port or 5432),
        "POSTGRES_USER": unquote(parsed.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parsed.password or ""),
    }


def event_store_env(settings: Settings) -> dict[str, str]:
    """The eventsourcing environment for the application's event store."""
    if settings.postgres_url:
        env = {
            # eventsourcing.postgres, creating its tables under a lock (adapters/persistence.py).
            "PERSISTENCE_MODULE": "baton.adapters.persistence:PostgresStore",
            "POSTGRES_CONNECT_TIMEOUT": "1",
            "POSTGRES_POOL_SIZE": "5",
            "POSTGRES_MAX_OVERFLOW": "10",
            "POSTGRES_LOCK_TIMEOUT": "5",
            # Several instances may share the database: refresh cached aggregates on read.
            "AGGREGATE_CACHE_FASTFORWARD": "y",
            **postgres_params(settings.postgres_url),
        }
        if settings.postgres_schema:
            env["POSTGRES_SCHEMA"] = settings.postgres_schema
        return env
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        # The library's recorder with multi-row inserts (adapters/persistence.py).
        "APPLICATION_RECORDER_TOPIC": "baton.adapters.persistence:SQLiteLog",
        "SQLITE_DBNAME": str((settings.data_dir / "events.sqlite").resolve()),
        "SQLITE_LOCK_TIMEOUT": "10",
    }
