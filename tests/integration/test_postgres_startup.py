"""Instances starting together on one empty PostgreSQL database: each creates what is missing
(the events' table, its composite types and insert function, the views, their tracking table,
the deployment's secret) and none of them fails, without any retry."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from baton.adapters.config import Settings, event_store_env
from baton.adapters.streamids import deployment_secret
from baton.domain.services import BatonApp
from baton.projections.projector import Projections

pytestmark = pytest.mark.postgres

INSTANCES = 6
ROUNDS = 4


def _start(settings: Settings, barrier: threading.Barrier) -> bytes:
    """What a service and its publisher process do at startup, from the same moment as the
    others: the application (events' schema), the relay's tracking, the views, the secret."""
    barrier.wait()
    app = BatonApp(event_store_env(settings))
    try:
        app.factory.tracking_recorder()
        projections = Projections(app)
        try:
            return deployment_secret(app.recorder)
        finally:
            projections.close()
    finally:
        app.close()


def test_instances_starting_at_once_on_an_empty_schema_all_start(
    postgres_db: dict[str, Any], tmp_path: Path
) -> None:
    for round_ in range(ROUNDS):
        schema = f"startup_{round_}"
        with psycopg.connect(postgres_db["url"], autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        settings = Settings(
            data_dir=tmp_path / schema, postgres_url=postgres_db["url"], postgres_schema=schema
        )
        barrier = threading.Barrier(INSTANCES)
        with ThreadPoolExecutor(INSTANCES) as pool:
            starts = [pool.submit(_start, settings, barrier) for _ in range(INSTANCES)]
            secrets = [start.result() for start in starts]
        assert len(set(secrets)) == 1, "every instance reads the one deployment secret"
        with psycopg.connect(postgres_db["url"], autocommit=True) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (schema,),
                )
            }
        assert {
            "baton_events",
            "baton_tasks",
            "baton_view_tracking",
            "baton_stream_secret",
        } <= tables
