"""Fixtures shared by every test layer: a real nats-server (left without streams by each test), a
Baton running on it, a scratch PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql

from baton.adapters.natsserver import EmbeddedNatsServer
from tests.integration.nats_support import Running, StartBaton, running_baton, settings_for
from tests.processes import delete_streams, streams_on

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
        # Each test deletes the streams it made (below); a module's fixture, those of its module.
        left = streams_on(server.url)
        assert not left, f"streams left on the session's nats-server: {sorted(left)}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNatsServer) -> str:
    """The URL of the session's nats-server."""
    return nats_server.url


@pytest.fixture(autouse=True)
def _delete_the_tests_streams(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the session's nats-server, deletes the JetStream streams that appeared
    during it (however made: a Baton in the test, a ``baton`` process, ``ensure_streams``).
    Streams of a wider-scoped fixture exist before the test starts and are left to it."""
    if "nats_server" not in request.fixturenames:
        yield
        return
    url = request.getfixturevalue("nats_server").url
    before = streams_on(url)
    yield
    delete_streams(url, streams_on(url) - before)


# --- Baton on the session's nats-server -------------------------------------------------------


@pytest.fixture
async def start_baton(nats_url: str, tmp_path: Path) -> AsyncIterator[StartBaton]:
    """Starts Batons in the test's event loop, each under a subject prefix of its own and with a
    client on its own connection: ``await start_baton(planner_timeout_s=0.5, timeout=30)`` takes
    ``Settings`` fields and the client's timeout. All are stopped after the test."""
    async with AsyncExitStack() as started:
        count = 0

        async def start(*, timeout: float = 10.0, **overrides: Any) -> Running:
            nonlocal count
            count += 1
            data_dir = tmp_path / ("data" if count == 1 else f"data{count}")
            settings = settings_for(nats_url, data_dir, **overrides)
            return await started.enter_async_context(running_baton(settings, timeout=timeout))

        yield start


@pytest.fixture
async def baton(start_baton: StartBaton) -> Running:
    """A Baton with the test settings (``settings_for``); a module that needs others overrides
    this fixture with its own call of ``start_baton``."""
    return await start_baton()


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
