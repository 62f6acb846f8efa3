"""Fixtures for the projection tests: one store per backend (SQLite file, PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from baton.adapters.config import Settings, event_store_env
from baton.domain.services import BatonApp
from baton.projections import Projections
from tests.conftest import _require_postgres, pg_admin_url

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def shared_postgres_url() -> Iterator[str]:
    """One scratch database for these tests; each test takes a fresh schema in it (which is
    also how BATON_POSTGRES_SCHEMA is exercised), cheaper than a database per test."""
    _require_postgres()
    dbname = f"baton_test_{uuid.uuid4().hex}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield urlunsplit(urlsplit(pg_admin_url())._replace(path=f"/{dbname}"))
    finally:
        with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )


def new_schema(url: str) -> str:
    """Creates an empty schema in the database at ``url``; returns its name."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Store settings for the parametrised backend: a fresh SQLite directory, or a fresh
    schema of the shared PostgreSQL database."""
    if request.param == "postgres":
        url = request.getfixturevalue("shared_postgres_url")
        return Settings(data_dir=tmp_path, postgres_url=url, postgres_schema=new_schema(url))
    return Settings(data_dir=tmp_path)


@pytest.fixture
def open_app(settings: Settings) -> Iterator[Callable[..., BatonApp]]:
    """Opens applications on the test's store (closed after the test)."""
    opened: list[BatonApp] = []

    def factory(**kwargs: Any) -> BatonApp:
        app = BatonApp(event_store_env(settings), **kwargs)
        opened.append(app)
        return app

    yield factory
    for app in opened:
        app.close()


@pytest.fixture
def app(open_app: Callable[..., BatonApp]) -> BatonApp:
    return open_app()


@pytest.fixture
def open_projections() -> Iterator[Callable[..., Projections]]:
    """Opens projections (closed after the test, before their application)."""
    opened: list[Projections] = []

    def factory(app: BatonApp, **kwargs: Any) -> Projections:
        projections = Projections(app, **kwargs)
        opened.append(projections)
        return projections

    yield factory
    for projections in opened:
        projections.close()


@pytest.fixture
def views(app: BatonApp, open_projections: Callable[..., Projections]) -> Projections:
    return open_projections(app)
