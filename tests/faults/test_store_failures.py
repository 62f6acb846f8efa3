"""The event store fails under the service: SQLite locked by another process beyond the lock
timeout, SQLite's disk full, PostgreSQL's connections killed and the database refusing
connections. Commands get the contract's clear 503 ``store_unavailable``, nothing partial is
stored, and the service resumes by itself when the store is back."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from baton.adapters.client import BatonClient, BatonRequestError
from tests.conftest import pg_admin_url
from tests.faults.support import (
    SEQ_PLAN,
    Load,
    ServiceProcess,
    check_everything,
    check_views_equal_a_rebuild,
    emit,
    max_notification_id,
    new_prefix,
)

LOCK_TIMEOUT_S = 1
OUTAGE_S = 3


def create(n: int) -> dict[str, Any]:
    return {"task_name": f"store {n}", "session_id": f"store-{n}", "plan": SEQ_PLAN}


async def expect_store_unavailable(client: BatonClient, msg_id: str, body: dict[str, Any]) -> str:
    """The command fails with the contract's 503; returns the message."""
    with pytest.raises(BatonRequestError) as failed:
        await client.request("task.create", body, msg_id=msg_id, timeout=LOCK_TIMEOUT_S + 10)
    error = failed.value
    assert (error.code, error.reason) == (503, "store_unavailable"), error
    assert error.message
    return error.message


async def check_nothing_half_done(client: BatonClient, sessions: list[str]) -> None:
    for session in sessions:
        assert (await client.tasks(session_id=session))["tasks"] == [], session


async def resume(client: BatonClient, bodies: dict[str, dict[str, Any]]) -> None:
    """The failed commands, repeated with their msg ids once the store is back, apply once."""
    for msg_id, body in bodies.items():
        for _ in range(100):
            try:
                task = await client.request("task.create", body, msg_id=msg_id)
                break
            except BatonRequestError as error:
                assert error.code == 503, error
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the service did not resume")
        again = await client.request("task.create", body, msg_id=msg_id)
        assert again == task
        found = (await client.tasks(session_id=body["session_id"]))["tasks"]
        assert [t["task_id"] for t in found] == [task["task_id"]]


# -- SQLite ------------------------------------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Another process holding ``BEGIN EXCLUSIVE`` on ``path`` until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == b"locked\n"
        yield
    finally:
        holder.stdin.close()  # EOF: the holder rolls back and exits
        holder.wait(10)
        holder.stdout.close()


async def test_a_sqlite_file_locked_beyond_the_timeout_gives_503_and_the_service_resumes(
    nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = ServiceProcess(
        nats_url,
        tmp_path / "data",
        new_prefix(),
        env={"BATON_SQLITE_LOCK_TIMEOUT": str(LOCK_TIMEOUT_S)},  # eventsourcing's, for app Baton
    )
    await asyncio.to_thread(service.start)
    try:
        async with await BatonClient.connect(nats_url, prefix=service.prefix, timeout=20) as client:
            before_task = await client.request("task.create", create(0), msg_id="lock-0")
            settings = service.settings()
            before = await asyncio.to_thread(max_notification_id, settings)
            bodies = {f"lock-{n}": create(n) for n in range(1, 6)}
            with exclusive_lock(settings.data_dir / "events.sqlite"):
                started = time.monotonic()
                messages = await asyncio.gather(
                    *(expect_store_unavailable(client, m, b) for m, b in bodies.items())
                )
                waited = time.monotonic() - started
                # Reads are answered from the views meanwhile.
                assert (await client.task(task_id=before_task["task_id"]))["version"] >= 1
                await check_nothing_half_done(client, [b["session_id"] for b in bodies.values()])
            assert "locked" in messages[0], messages[0]
            assert waited >= LOCK_TIMEOUT_S * 0.9
            assert await asyncio.to_thread(max_notification_id, settings) == before
            await resume(client, bodies)
        assert await asyncio.to_thread(service.terminate) == 0
    finally:
        service.kill()
    emit(capsys, f"sqlite locked: {len(bodies)} commands got 503 after {waited:.1f} s, resumed")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (the tests run as root; a real full disk, not a simulation)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs (needs root): {mounted.stderr.decode().strip()}", pytrace=False
        )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Writes a file until the disk is full; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_gives_503_and_the_service_resumes_when_space_is_freed(
    nats_url: str, tmp_path: Path, tiny_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service = ServiceProcess(nats_url, tiny_disk / "data", new_prefix())
    service.log_dir = tmp_path / "logs"
    await asyncio.to_thread(service.start)
    try:
        async with await BatonClient.connect(nats_url, prefix=service.prefix, timeout=20) as client:
            await client.request("task.create", create(0), msg_id="disk-0")
            settings = service.settings()
            filler = await asyncio.to_thread(fill, tiny_disk)
            # The write-ahead log may still have room from earlier frames: write until it fails.
            failed: dict[str, dict[str, Any]] = {}
            message = ""
            succeeded = 0
            before = await asyncio.to_thread(max_notification_id, settings)
            for n in range(1, 3000):
                try:
                    await client.request("task.create", create(n), msg_id=f"disk-{n}")
                    succeeded += 1
                    before = await asyncio.to_thread(max_notification_id, settings)
                except BatonRequestError as error:
                    assert (error.code, error.reason) == (503, "store_unavailable"), error
                    failed[f"disk-{n}"] = create(n)
                    message = error.message
                    if len(failed) == 3:
                        break
            assert failed, "the disk never filled up"
            assert await asyncio.to_thread(max_notification_id, settings) == before
            # Space first: with the disk full, a query whose views must catch up is itself a 503.
            filler.unlink()
            await check_nothing_half_done(client, [b["session_id"] for b in failed.values()])
            await resume(client, failed)
        assert await asyncio.to_thread(service.terminate) == 0
        await asyncio.to_thread(check_views_equal_a_rebuild, settings)
    finally:
        service.kill()
    emit(
        capsys,
        f"disk full: after {succeeded} more commands, {len(failed)} got 503 ({message!r}); "
        "resumed once space was freed",
    )


# -- PostgreSQL --------------------------------------------------------------------------------


def terminate_backends(dbname: str) -> int:
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
    return len(rows)


def allow_connections(dbname: str, allowed: bool) -> None:
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.Literal(allowed)
            )
        )


@pytest.mark.postgres
async def test_postgres_connections_killed_and_refused_mid_load_lose_nothing(
    nats_url: str, tmp_path: Path, postgres_db: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    dbname = postgres_db["dbname"]
    service = ServiceProcess(
        nats_url, tmp_path / "data", new_prefix(), env={"BATON_POSTGRES_URL": postgres_db["url"]}
    )
    await asyncio.to_thread(service.start)
    killed = 0
    try:
        async with await BatonClient.connect(nats_url, prefix=service.prefix, timeout=10) as client:
            load = Load(client, retry_on=(503,))
            running = asyncio.create_task(load.run(8))
            try:
                for _ in range(3):
                    await load.wait_acked(len(load.acked) + 60)
                    killed += await asyncio.to_thread(terminate_backends, dbname)
                # An outage: the database refuses connections for a while.
                await load.wait_acked(len(load.acked) + 60)
                await asyncio.to_thread(allow_connections, dbname, False)
                try:
                    killed += await asyncio.to_thread(terminate_backends, dbname)
                    await asyncio.sleep(OUTAGE_S - 1)
                    acked_during_outage = len(load.acked)
                    await asyncio.sleep(1)
                    assert len(load.acked) == acked_during_outage, "acked with no database"
                finally:
                    await asyncio.to_thread(allow_connections, dbname, True)
                await load.wait_acked(len(load.acked) + 100)
            finally:
                load.stop.set()
                await asyncio.wait_for(running, 120)
            assert killed > 0
            # Killed connections are retried inside the service (eventsourcing reconnects), and a
            # short refusal only delays commands: anything a client sees is the contract's 503.
            assert set(load.errors) <= {"503 store_unavailable"}, load.errors
            figures, _ = await check_everything(load, nats_url, service.prefix, service.settings())
        assert await asyncio.to_thread(service.terminate) == 0
        await asyncio.to_thread(check_views_equal_a_rebuild, service.settings())
    finally:
        service.kill()
    emit(
        capsys,
        f"postgres: {killed} backends killed and a {OUTAGE_S} s refusal; "
        f"{sum(load.errors.values())} commands got 503 store_unavailable, {load.unavailable} timed "
        f"out, all retried with their msg ids; {figures.commands_acked} acked "
        f"commands checked over {figures.tasks} tasks, nothing lost or doubled",
    )


@pytest.mark.postgres
async def test_a_postgres_outage_gives_a_503_store_unavailable_not_a_hang(
    nats_url: str, tmp_path: Path, postgres_db: dict[str, Any]
) -> None:
    dbname = postgres_db["dbname"]
    service = ServiceProcess(
        nats_url, tmp_path / "data", new_prefix(), env={"BATON_POSTGRES_URL": postgres_db["url"]}
    )
    await asyncio.to_thread(service.start)
    try:
        async with await BatonClient.connect(nats_url, prefix=service.prefix) as client:
            await client.request("task.create", create(0), msg_id="outage-0")
            await asyncio.to_thread(allow_connections, dbname, False)
            try:
                await asyncio.to_thread(terminate_backends, dbname)
                # The store's own retries take a few seconds (they used to take ~50 s); no
                # timing is asserted, only that a clear 503 comes back rather than a hang.
                with pytest.raises(BatonRequestError) as failed:
                    await client.request("task.create", create(1), msg_id="outage-1", timeout=60)
            finally:
                await asyncio.to_thread(allow_connections, dbname, True)
            assert (failed.value.code, failed.value.reason) == (503, "store_unavailable")
            await resume(client, {"outage-1": create(1)})
    finally:
        service.kill()
