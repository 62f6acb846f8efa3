"""The test infrastructure itself: the embedded nats-server and the scratch PostgreSQL database."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import psycopg
import pytest

from baton.adapters.natsserver import EmbeddedNatsServer, nats_answers


async def test_embedded_server_accepts_a_connection_and_jetstream_acks_a_publish(
    nats_url: str,
) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="INFRA_SMOKE", subjects=["infra.smoke.>"])
        ack = await js.publish("infra.smoke.one", b"hello", headers={"Nats-Msg-Id": "m-1"})
        assert ack.stream == "INFRA_SMOKE"
        assert ack.seq == 1
        again = await js.publish("infra.smoke.one", b"hello", headers={"Nats-Msg-Id": "m-1"})
        assert again.duplicate
        await js.delete_stream("INFRA_SMOKE")
    finally:
        await nc.close()


def test_nats_answers_tells_a_listening_server_from_a_closed_port(
    nats_server: EmbeddedNatsServer,
) -> None:
    assert nats_answers(nats_server.url)
    assert not nats_answers("nats://127.0.0.1:1", timeout=0.2)


@pytest.mark.slow
async def test_embedded_server_restarts_on_the_same_port_and_clients_reconnect(
    tmp_path: Any,
) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    with EmbeddedNatsServer(tmp_path / "js") as server:
        port = server.port
        nc = await nats.connect(
            server.url,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.1,
            reconnected_cb=on_reconnect,
        )
        try:
            js = nc.jetstream()
            await js.add_stream(name="RESTART", subjects=["restart.>"])
            first = await js.publish("restart.a", b"before")

            await asyncio.to_thread(server.restart)

            assert server.port == port
            assert server.url == f"nats://127.0.0.1:{port}"
            await asyncio.wait_for(reconnected.wait(), timeout=10)
            second = await js.publish("restart.a", b"after")
            # Same store dir: the stream and its first message survived the restart.
            assert second.stream == "RESTART"
            assert second.seq == first.seq + 1
        finally:
            await nc.close()
    assert not server.running


@pytest.mark.postgres
def test_postgres_db_gives_a_usable_empty_database(postgres_db: dict[str, Any]) -> None:
    with psycopg.connect(postgres_db["url"], autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        assert conn.execute("SELECT name FROM t ORDER BY id").fetchall() == [("one",), ("two",)]
        assert conn.execute("SELECT current_database()").fetchone() == (postgres_db["dbname"],)
