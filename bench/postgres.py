"""Benchmark 6: benchmark 1 on PostgreSQL, beside SQLite.

Creates a fresh database ``baton_bench_<hex>`` on 127.0.0.1:5432 (user ``postgres``, trust
auth; override with ``BENCH_POSTGRES_ADMIN_URL``), points ``BATON_POSTGRES_URL`` at it, runs
the command benchmark with its echo baseline, then the raw eventsourcing baseline on the same
server, and drops the database. Skipped, with the reason, when the server can't be reached.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from baton.adapters.config import postgres_params
from bench import baselines, commands
from bench.stats import Series, goal, header, note, ratio

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("BENCH_POSTGRES_ADMIN_URL", ADMIN_URL)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database for the duration of the block; yields its URL."""
    import psycopg

    admin = admin_url()
    name = f"baton_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unreachable() -> str | None:
    try:
        import psycopg

        with psycopg.connect(admin_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure is the reason to skip
        return f"{type(error).__name__}: {error}".strip()
    return None


def run(quick: bool, sqlite: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    header("6. Commands over NATS on PostgreSQL (benchmark 1 with BATON_POSTGRES_URL)")
    reason = unreachable()
    if reason is not None:
        note(f"SKIPPED: PostgreSQL is unreachable at {admin_url()}: {reason}")
        return {}
    with fresh_database() as url:
        note(f"fresh database {url.rsplit('/', 1)[1]} (dropped afterwards)")
        levels, latency = commands.measure(quick=quick, postgres_url=url)
    commands.report(levels, "PostgreSQL", latency)
    top = levels[-1]
    goal(f"Baton/echo at {top.in_flight} in flight on PostgreSQL", top.ratio, 0.4)
    results: dict[str, Any] = {
        f"pg_commands_per_s@{lv.in_flight}": lv.baton.median for lv in levels
    }
    if sqlite:
        for level in levels:
            key = f"commands_per_s@{level.in_flight}"
            if key in sqlite:
                ratio(
                    f"PostgreSQL/SQLite commands/s at {level.in_flight} in flight",
                    level.baton.median,
                    sqlite[key],
                )
    with fresh_database() as url:
        single = Series("raw eventsourcing, one save per transaction", "saves/s")
        batched = Series("raw eventsourcing, 100 aggregates per save", "events/s")
        for _ in range(3):
            app = baselines.postgres_app(postgres_params(url))
            single.add(baselines.single_saves_per_s(app, 300 if quick else 1000))
            batched.add(baselines.batched_events_per_s(app, 3000 if quick else 10000))
            app.close()
    print(single.line())
    print(batched.line())
    return results
