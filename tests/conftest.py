"""Fixtures shared by every test layer: a real nats-server, a scratch PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql

from baton.adapters.natsserver import EmbeddedNatsServer

# Hypothesis profiles: "ci" (the default here) is quick and tolerant of slow shared machines,
# "dev" is Hypothesis' own default, "soak" runs long (make soak).
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
settings.register_profile("dev", settings.get_profile("default"))
settings.register_profile(
    "soak",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# --- NATS -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNatsServer]:
    """A real nats-server with JetStream, one per test session."""
    server = EmbeddedNatsServer(tmp_path_factory.mktemp("nats-js"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNatsServer) -> str:
    """The URL of the session's nats-server."""
    return nats_server.url


# --- PostgreSQL -------------------------------------------------------------------------------

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_admin_url() -> str:
    """The PostgreSQL server the tests use (env BATON_TEST_POSTGRES_URL overrides the default)."""
    return os.environ.get("BATON_TEST_POSTGRES_URL", DEFAULT_PG_ADMIN_URL)


def postgres_available() -> bool:
    """Whether the test PostgreSQL server accepts a connection within 2 s."""
    try:
        with psycopg.connect(pg_admin_url(), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _require_postgres() -> None:
    if postgres_available():
        return
    where = _redacted(pg_admin_url())
    if os.environ.get("BATON_REQUIRE_POSTGRES"):
        pytest.fail(
            f"PostgreSQL is not reachable at {where} and BATON_REQUIRE_POSTGRES is set",
            pytrace=False,
        )
    pytest.skip(
        f"PostgreSQL is not reachable at {where}; "
        "set BATON_REQUIRE_POSTGRES=1 to make this a failure"
    )


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
def postgres_db() -> Iterator[dict[str, Any]]:
    """A fresh, empty database on the test server, dropped after the test.

    Yields {host, port, user, password, dbname, url}.
    """
    _require_postgres()
    admin = urlsplit(pg_admin_url())
    dbname = f"baton_test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    user = admin.username or "postgres"
    password = admin.password or ""
    host = admin.hostname or "127.0.0.1"
    port = admin.port or 5432
    try:
        yield {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "dbname": dbname,
            "url": urlunsplit(admin._replace(path=f"/{dbname}")),
        }
    finally:
        with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
