"""A real NATS cluster under load: three nats-server nodes on loopback (routes between them,
JetStream on each with its own store), Baton's streams with three replicas, two Baton instances
on one PostgreSQL database connected to different nodes, and two clients driving the mixed load.

First the node holding the progress stream's leader is SIGKILLed; once the load is served again
it is restarted, and then the node one instance is connected to is SIGKILLed. Throughout, every
acknowledged command is applied once, every event reaches the progress stream once and in order
per task, no trigger is published twice or out of order for its task, and both instances keep
answering. (``make soak`` runs the long version.)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nats
import pytest

from baton.adapters.client import BatonClient
from baton.adapters.natsserver import EmbeddedNatsServer, free_port
from baton.adapters.publication import stream_names
from baton.adapters.status import gather
from tests.faults.support import (
    SOAK,
    Load,
    ServiceProcess,
    check_everything,
    emit,
    new_prefix,
    stream_messages,
)

NODES = 3
#: Commands acknowledged between two faults.
BETWEEN_FAULTS = 600 if SOAK else 150
WORKERS = 8 if SOAK else 4
#: How long the watcher waits for one stream info: during an election a request may go
#: unanswered, and the figures are only as fine as this.
LOOK_S = 0.3

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@contextmanager
def nats_cluster(root: Path) -> Iterator[list[EmbeddedNatsServer]]:
    """Three JetStream nodes routed to one another on loopback, each with its own store."""
    host = "127.0.0.1"
    cluster_ports = [free_port(host) for _ in range(NODES)]
    nodes = [
        EmbeddedNatsServer(
            root / f"n{i}",
            host=host,
            server_name=f"n{i}",
            cluster_port=cluster_ports[i],
            routes=[f"nats-route://{host}:{p}" for j, p in enumerate(cluster_ports) if j != i],
            startup_timeout=30,
        )
        for i in range(NODES)
    ]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.close()


def urls(nodes: list[EmbeddedNatsServer], first: int) -> str:
    """Every node's URL, node ``first`` first (the one a process prefers)."""
    order = [nodes[first]] + [n for i, n in enumerate(nodes) if i != first]
    return ",".join(n.url for n in order)


async def quiet(error: Exception) -> None:
    """Connection errors while a node is down are expected."""


async def jetstream_ready(url: str, timeout: float = 60.0) -> None:
    """Waits until the cluster's JetStream answers (a meta leader is elected)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(url.split(","), error_cb=quiet)
            try:
                await nc.jetstream().account_info()
                return
            finally:
                await nc.close()
        except Exception:
            assert time.monotonic() < deadline, "the cluster's JetStream never became ready"
            await asyncio.sleep(0.5)


async def leader_of(js: Any, stream: str, timeout: float = 60.0, exclude: str = "") -> str:
    """The server name of ``stream``'s leader (waiting through an election, and for one that
    is not ``exclude``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await asyncio.wait_for(js.stream_info(stream), LOOK_S)
            leader = info.cluster.leader if info.cluster is not None else None
            if leader and leader != exclude:
                return str(leader)
        except Exception:
            pass
        assert time.monotonic() < deadline, f"{stream} has no leader"
        await asyncio.sleep(0.05)


async def observer(node: EmbeddedNatsServer) -> Any:
    """JetStream on a connection of its own to ``node`` only."""
    nc = await nats.connect(node.url, allow_reconnect=False, error_cb=quiet)
    observers.append(nc)
    return nc.jetstream()


observers: list[Any] = []


async def stream_grows(js: Any, stream: str, beyond: int, timeout: float = 60.0) -> None:
    """Waits until ``stream`` holds more than ``beyond`` messages (publication resumed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await asyncio.wait_for(js.stream_info(stream), LOOK_S)).state.messages > beyond:
                return
        except Exception:
            pass
        assert time.monotonic() < deadline, f"nothing more published on {stream}"
        await asyncio.sleep(0.05)


async def replicas_current(js: Any, stream: str, timeout: float = 120.0) -> None:
    """Waits until every replica of ``stream`` is current (a restarted node caught up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = await js.stream_info(stream)
            replicas = info.cluster.replicas or [] if info.cluster else []
            if len(replicas) == NODES - 1 and all(r.current and not r.offline for r in replicas):
                return
        except Exception:
            pass
        assert time.monotonic() < deadline, f"{stream}'s replicas never caught up"
        await asyncio.sleep(0.5)


async def served_by(nc: Any, prefix: str) -> dict[str, dict[str, Any]]:
    """Each instance's ``baton status`` entry, by instance id."""
    return {i["id"]: i for i in await gather(nc, prefix, wait=3)}


async def wait_served(load: list[Load], more: int, timeout: float = 120.0) -> float:
    """Waits until ``more`` further commands are acknowledged; returns how long it took."""
    started = time.monotonic()
    target = sum(len(x.acked) for x in load) + more
    while sum(len(x.acked) for x in load) < target:
        assert time.monotonic() - started < timeout, "the load was not served again"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def triggers_in_order(
    triggers: list[tuple[dict[str, Any], str]], histories: dict[str, list[dict[str, Any]]]
) -> None:
    """Per task, the published triggers come in the order the task scheduled them."""
    scheduled: dict[str, list[str]] = {}
    for task_id, events in histories.items():
        # A trigger is scheduled alone, or in the StepStarted of the step it is for.
        scheduled[task_id] = [
            e["data"]["trigger"]["trigger_id"] for e in events if (e["data"] or {}).get("trigger")
        ]
    published: dict[str, list[str]] = {}
    for body, _ in triggers:
        published.setdefault(body["task_id"], []).append(body["trigger_id"])
    for task_id, ids in published.items():
        order = scheduled[task_id]
        positions = [order.index(t) for t in ids]
        assert positions == sorted(positions), (
            f"triggers of {task_id} out of order: published {ids}, scheduled {order}"
        )


async def test_a_cluster_loses_the_stream_leader_then_an_instance_node_and_nothing_is_lost(
    tmp_path: Path, postgres_db: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = new_prefix()
    progress_stream, trigger_stream = stream_names(prefix)
    figures: dict[str, Any] = {}
    with nats_cluster(tmp_path / "nats") as nodes:
        by_name = {n.server_name: n for n in nodes}
        by_address = {n.url[len("nats://") :]: n for n in nodes}
        await jetstream_ready(urls(nodes, 0))
        env = {"BATON_POSTGRES_URL": postgres_db["url"], "BATON_STREAM_REPLICAS": "3"}
        instances = [
            ServiceProcess(urls(nodes, i), tmp_path / f"i{i}" / "data", prefix, env=env,
                           name=f"i{i}")
            for i in range(2)
        ]  # fmt: skip
        for instance in instances:
            await asyncio.to_thread(instance.start, 90)
        clients: list[BatonClient] = []
        try:
            for i in range(2):  # one client beside each instance: both get work
                clients.append(
                    await BatonClient.connect(
                        urls(nodes, i),
                        prefix=prefix,
                        timeout=3,
                        reconnect_time_wait=0.1,
                        max_reconnect_attempts=-1,
                        dont_randomize=True,
                        error_cb=quiet,
                    )
                )
            admin = clients[0]
            js = admin.nc.jetstream()
            info = await js.stream_info(progress_stream)
            assert info.config.num_replicas == 3
            before = await served_by(admin.nc, prefix)
            assert len(before) == 2
            servers = sorted(i["figures"]["nats_server"] for i in before.values())
            assert servers == sorted([nodes[0].url[7:], nodes[1].url[7:]]), servers

            loads = [Load(client, tag=f"c{i}") for i, client in enumerate(clients)]
            loads[1]._count = 1_000_000  # sessions are named after n: none shared by the two
            running = [asyncio.create_task(load.run(WORKERS)) for load in loads]
            try:
                await wait_served(loads, BETWEEN_FAULTS)

                # Fault 1: the node holding the progress stream's leader.
                leader = await leader_of(js, progress_stream)
                seen = await served_by(admin.nc, prefix)
                stored = (await js.stream_info(progress_stream)).state.messages
                # Watched from a node that stays up (a request in flight to a killed node would
                # only time out, and measure the watcher rather than Baton).
                watch = await observer(next(n for n in nodes if n.server_name != leader))
                killed_at = time.monotonic()
                by_name[leader].kill()

                async def since_kill(step: Any) -> float:
                    await step
                    return round(time.monotonic() - killed_at, 2)

                served, elected, published = await asyncio.gather(
                    since_kill(wait_served(loads, 20)),
                    since_kill(leader_of(watch, progress_stream, exclude=leader)),
                    since_kill(stream_grows(watch, progress_stream, stored)),
                )
                figures["served_again_after_leader_loss_s"] = served
                figures["new_leader_after_s"] = elected
                figures["progress_published_again_after_s"] = published
                await wait_served(loads, BETWEEN_FAULTS)
                after = await served_by(admin.nc, prefix)
                assert set(after) == set(seen), "an instance stopped answering"
                for instance_id, entry in after.items():
                    assert entry["requests"] > seen[instance_id]["requests"], instance_id

                # The first node back (a quorum of two must survive the next kill).
                await asyncio.to_thread(by_name[leader].start)
                for stream in (progress_stream, trigger_stream):
                    await replicas_current(js, stream)

                # Fault 2: the node an instance is connected to; one that does not lead the
                # progress stream when there is one, so this fault is the loss of a connection
                # (the first was the loss of a leader).
                seen = await served_by(admin.nc, prefix)
                leader = await leader_of(js, progress_stream)
                candidates = sorted(
                    seen.values(),
                    key=lambda e: (by_address[e["figures"]["nats_server"]].server_name == leader,
                                   e["figures"]["nats_server"]),
                )  # fmt: skip
                first = candidates[0]
                target = by_address[first["figures"]["nats_server"]]
                figures["instance_node_led_the_stream"] = target.server_name == leader
                stored = (await js.stream_info(progress_stream)).state.messages
                watch = await observer(next(n for n in nodes if n.running and n is not target))
                killed_at = time.monotonic()
                target.kill()
                served, published = await asyncio.gather(
                    since_kill(wait_served(loads, 20)),
                    since_kill(stream_grows(watch, progress_stream, stored)),
                )
                figures["served_again_after_instance_node_loss_s"] = served
                figures["progress_published_again_after_instance_node_loss_s"] = published
                await wait_served(loads, BETWEEN_FAULTS)
                after = await served_by(admin.nc, prefix)
                assert set(after) == set(seen), "an instance stopped answering"
                for instance_id, entry in after.items():
                    assert entry["requests"] > seen[instance_id]["requests"], instance_id
                moved = after[first["id"]]["figures"]["nats_server"]
                assert moved != target.url[7:], "the instance did not move to another node"
            finally:
                for load in loads:
                    load.stop.set()
                await asyncio.wait_for(asyncio.gather(*running), 180)

            for load in loads:
                assert not load.errors, load.errors
            alive = next(n for n in nodes if n.running)
            merged = Load(clients[0], tag="all")
            for load in loads:
                merged.acked.update(load.acked)
                merged.tasks.update(load.tasks)
            checked, histories = await check_everything(
                merged, alive.url, prefix, instances[0].settings()
            )
            triggers_in_order(await stream_messages(alive.url, trigger_stream), histories)
            for instance in instances:
                assert instance.alive, f"{instance.name} died:\n{instance.log()[-3000:]}"
            status = await served_by(admin.nc, prefix)
            figures["requests_by_instance"] = sorted(e["requests"] for e in status.values())
            figures["errors_by_instance"] = sorted(e["errors"] for e in status.values())
            figures["unavailable_retries"] = sum(x.unavailable for x in loads)
            figures.update(
                commands_acked=checked.commands_acked,
                tasks=checked.tasks,
                progress_messages=checked.progress_messages,
                triggers_published=checked.triggers_published,
            )
        finally:
            for client in clients:
                await client.close()
            while observers:
                await observers.pop().close()
            for instance in instances:
                if instance.alive:
                    await asyncio.to_thread(instance.terminate)
    emit(capsys, "nats cluster (3 nodes, R3, 2 instances on PostgreSQL): " + json.dumps(figures))
