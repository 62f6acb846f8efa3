"""Instances starting together on one empty PostgreSQL database: each creates what is missing
(the events' table, its composite types and insert function, the views, their tracking table,
the deployment's secret) and none of them fails, without any retry."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from psycopg import sql

from baton.adapters.config import Settings, event_store_env
from baton.adapters.streamids import deployment_secret
from baton.adapters.timedids import timed_ids
from baton.domain.services import BatonApp
from baton.projections import store
from baton.projections.projector import Projections

pytestmark = pytest.mark.postgres

INSTANCES = 6
ROUNDS = 4


def _start(settings: Settings, barrier: threading.Barrier) -> tuple[bytes, bool]:
    """What a service and its publisher process do at startup, from the same moment as the
    others: the application (events' schema), the relay's tracking, the views, the secret, the
    timed ids' mark."""
    barrier.wait()
    app = BatonApp(event_store_env(settings))
    try:
        app.factory.tracking_recorder()
        projections = Projections(app)
        try:
            timed = timed_ids(app.recorder, None)  # as serve: before the secret
            return deployment_secret(app.recorder), timed
        finally:
            projections.close()
    finally:
        app.close()


def test_instances_starting_at_once_on_an_empty_schema_all_start(
    postgres_db: dict[str, Any], tmp_path: Path
) -> None:
    for round_ in range(ROUNDS):
        schema = f"startup_{round_}"
        settings = _fresh(postgres_db, tmp_path, schema)
        barrier = threading.Barrier(INSTANCES)
        with ThreadPoolExecutor(INSTANCES) as pool:
            starts = [pool.submit(_start, settings, barrier) for _ in range(INSTANCES)]
            started = [start.result() for start in starts]
        assert len({secret for secret, _ in started}) == 1, "one deployment secret for all"
        assert all(timed for _, timed in started), "an empty store is marked for timed ids"
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
            "baton_store_marks",
        } <= tables


def _fresh(postgres_db: dict[str, Any], tmp_path: Path, schema: str) -> Settings:
    with psycopg.connect(postgres_db["url"], autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return Settings(
        data_dir=tmp_path / schema, postgres_url=postgres_db["url"], postgres_schema=schema
    )


def _start_and_close(env: dict[str, str]) -> None:
    app = BatonApp(env)
    try:
        Projections(app).close()
    finally:
        app.close()


def test_an_instance_starting_while_another_rebuilds_its_views_waits_and_starts(
    postgres_db: dict[str, Any], tmp_path: Path
) -> None:
    """A rebuild holds the views' meta row and then rewrites the tables; a start creating what
    is missing takes the meta row first too, so it waits for the rebuild instead of
    deadlocking with it."""
    env = event_store_env(_fresh(postgres_db, tmp_path, "rebuilding"))
    running = BatonApp(env)
    views = Projections(running)
    rebuild = psycopg.connect(postgres_db["url"])  # the rebuild's transaction, step by step
    try:
        rebuild.execute(views.store.sql("SELECT generation FROM {meta} WHERE id = 1 FOR UPDATE"))
        rebuild.execute(views.store.sql("UPDATE {meta} SET generation = generation + 1"))
        with ThreadPoolExecutor(1) as pool:
            starting = pool.submit(_start_and_close, env)
            time.sleep(1.0)  # the start reaches the views and waits on the rebuild
            rebuild.execute(views.store.sql("DELETE FROM {tasks}"))
            rebuild.commit()
            starting.result(timeout=30)  # raised "deadlock detected" before
    finally:
        rebuild.close()
        views.close()
        running.close()


def test_the_schema_lock_takes_no_connection_from_the_pool(
    postgres_db: dict[str, Any], tmp_path: Path
) -> None:
    env = event_store_env(_fresh(postgres_db, tmp_path, "one_connection"))
    _start_and_close({**env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "0"})


def test_a_start_waits_for_a_held_schema_lock_says_so_and_gives_up_with_a_clear_error(
    postgres_db: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = event_store_env(_fresh(postgres_db, tmp_path, "held"))
    monkeypatch.setattr(store, "DDL_LOCK_WAIT_S", 0.5)
    with psycopg.connect(postgres_db["url"], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (store.DDL_LOCK_KEY,))
        with caplog.at_level(logging.INFO), pytest.raises(OperationalError, match="schema lock"):
            BatonApp(env)
    assert "waiting for another Baton process to finish creating tables" in caplog.text
    _start_and_close(env)  # the holder's session ended: the lock is free


def test_without_create_table_a_start_does_not_wait_for_the_schema_lock(
    postgres_db: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = event_store_env(_fresh(postgres_db, tmp_path, "created"))
    BatonApp(env).close()
    monkeypatch.setattr(store, "DDL_LOCK_WAIT_S", 0.5)
    with psycopg.connect(postgres_db["url"], autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (store.DDL_LOCK_KEY,))
        BatonApp({**env, "CREATE_TABLE": "n"}).close()


def test_the_schema_lock_is_taken_again_by_its_holder_without_waiting(
    postgres_db: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = BatonApp(event_store_env(_fresh(postgres_db, tmp_path, "nested")))
    monkeypatch.setattr(store, "DDL_LOCK_WAIT_S", 0.5)
    try:
        datastore = app.recorder.datastore  # type: ignore[attr-defined]
        with store.postgres_ddl_lock(datastore), store.postgres_ddl_lock(datastore):
            pass
        with store.postgres_ddl_lock(datastore):  # and released after both
            pass
    finally:
        app.close()


def test_an_instance_upgrading_old_views_while_an_old_instance_writes_them_both_go_on(
    postgres_db: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolling upgrade: the new instance finds views of an older layout and drops them; the
    old one starts a batch (its meta row first) just after the layout was read. One waits for
    the other; neither dies of a deadlock."""
    settings = _fresh(postgres_db, tmp_path, "upgrading")
    env = event_store_env(settings)
    _start_and_close(env)
    with psycopg.connect(postgres_db["url"], autocommit=True) as conn:
        conn.execute('UPDATE "upgrading".baton_projection_meta SET schema_version = 1')
    batch_may_start = threading.Event()
    batch: list[str] = []

    def old_instance_batch() -> None:
        batch_may_start.wait(30)
        try:
            with psycopg.connect(postgres_db["url"]) as conn:
                conn.execute(
                    'SELECT generation FROM "upgrading".baton_projection_meta'
                    " WHERE id = 1 FOR UPDATE"
                )
                time.sleep(0.1)
                conn.execute('DELETE FROM "upgrading".baton_tasks')
            batch.append("committed")
        except psycopg.Error as error:
            batch.append(f"{type(error).__name__}: {error}")

    read_layout = store.ViewStore._stored_schema_version

    def layout_then_a_rival(self: store.ViewStore, cursor: Any) -> int | None:
        version = read_layout(self, cursor)
        if not batch_may_start.is_set():
            batch_may_start.set()
            time.sleep(0.5)  # the old instance's batch reaches the meta row meanwhile
        return version

    monkeypatch.setattr(store.ViewStore, "_stored_schema_version", layout_then_a_rival)
    rival = threading.Thread(target=old_instance_batch)
    rival.start()
    try:
        _start_and_close(env)
    finally:
        batch_may_start.set()
        rival.join(30)
    assert batch == ["committed"]
