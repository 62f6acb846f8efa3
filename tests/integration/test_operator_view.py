"""The operator's view of one instance: ``$SRV.STATS`` counts what was answered (errors and
processing times included), its ``data`` carries the instance's figures, ``/metrics`` exposes
the same for Prometheus, and JSON log lines carry the request's subject, command id and task."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from baton.adapters.client import BatonRequestError
from baton.adapters.logs import JsonFormatter
from baton.adapters.natsserver import free_port
from baton.adapters.status import gather, table
from tests.integration.nats_support import (
    Running,
    planner_service,
    running_baton,
    settings_for,
    wait_for,
)
from tests.plans import seq

PLANNER_DELAY_S = 0.3


async def stats_of(baton: Running) -> dict[str, Any]:
    service = baton.baton.service
    assert service is not None and service.service is not None
    msg = await baton.nc.request(f"$SRV.STATS.baton.{service.service.id}", b"", timeout=5)
    return dict(json.loads(msg.data))


def endpoint(stats: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [e for e in stats["endpoints"] if e["name"] == name]
    return dict(found)


async def test_srv_stats_counts_the_errors_sent_and_the_time_a_command_took(
    nats_url: str, tmp_path: Path
) -> None:
    settings = settings_for(nats_url, tmp_path / "data")

    async def slow_plan(_: dict[str, Any]) -> Any:
        await asyncio.sleep(PLANNER_DELAY_S)
        return seq("a", "b")

    async with (
        running_baton(settings) as baton,
        planner_service(nats_url, baton.prefix, plan=slow_plan),
    ):
        view = await baton.client.create_task(task_name="planned", task_instruction="do")
        await baton.client.create_task(task_name="planned too", task_instruction="do")
        errors = 0
        for unknown in ("nope-1", "nope-2", "nope-3"):
            with pytest.raises(BatonRequestError) as refused:
                await baton.client.start_task(task_id=unknown)
            assert refused.value.code == 404
            errors += 1
        with pytest.raises(BatonRequestError):
            await baton.client.request_raw("task.start", b"{not json")
        errors += 1
        await baton.client.start_task(task_id=view["task_id"])

        stats = await stats_of(baton)
        create, start = endpoint(stats, "task-create"), endpoint(stats, "task-start")
        assert (create["num_requests"], create["num_errors"]) == (2, 0)
        assert (start["num_requests"], start["num_errors"]) == (errors + 1, errors)
        assert start["last_error"].startswith("400:")
        # The planner's answer is part of a create: the time is the command's, not a hand-off's.
        assert create["average_processing_time"] >= PLANNER_DELAY_S * 1e9
        assert create["processing_time"] >= 2 * PLANNER_DELAY_S * 1e9
        assert endpoint(stats, "query-task")["num_requests"] == 0


async def test_srv_stats_data_carries_the_instance_figures(nats_url: str, tmp_path: Path) -> None:
    async with running_baton(settings_for(nats_url, tmp_path / "data")) as baton:
        view = await baton.client.create_task(task_name="t", plan=seq("a"))
        await baton.client.start_task(task_id=view["task_id"], delay_s=3600)
        commands_done = time.time()

        async def sampled_after_the_commands() -> bool:
            data = (await stats_of(baton))["data"]
            return (
                data["sampled_at"] > commands_done
                and data["projection_lag"] == 0
                and data["relay_backlog"] == 0
            )

        await wait_for(sampled_after_the_commands, timeout=10)
        data = (await stats_of(baton))["data"]
        assert data["due_triggers"] == 0  # its trigger fires in an hour
        assert data["in_flight"] == 0
        assert data["progress_published"] >= 3  # created, step current, trigger scheduled
        assert data["nats_server"] == nats_url.split("://")[1]
        projections = baton.baton.projections
        knows_leases = callable(getattr(projections, "lapsing_leases", None)) or (
            "leases" in getattr(getattr(projections, "store", None), "names", {})
        )
        # Absent (None) until the projections know leases; then none lapsed (nothing claimed).
        assert data["lapsing_leases"] == (0 if knows_leases else None)

        [me] = [i for i in await gather(baton.nc, baton.prefix) if i["prefix"] == baton.prefix]
        assert me["requests"] == 2 and me["errors"] == 0
        assert me["figures"]["projection_lag"] == 0
        text = table([me])
        assert me["id"] in text and "RELAY BACKLOG" in text


async def test_a_prometheus_scrape_returns_the_figures_and_latency_histograms(
    nats_url: str, tmp_path: Path
) -> None:
    addr = f"127.0.0.1:{free_port('127.0.0.1')}"
    settings = settings_for(nats_url, tmp_path / "data", metrics_addr=addr)
    async with running_baton(settings) as baton:
        view = await baton.client.create_task(task_name="t", plan=seq("a"))
        for _ in range(2):
            with pytest.raises(BatonRequestError):
                await baton.client.complete_task(task_id="unknown")
        await baton.client.complete_task(task_id=view["task_id"])
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{addr}/metrics") as response,
        ):
            assert response.status == 200
            page = await response.text()
    lines = page.splitlines()
    assert 'baton_request_errors_total{code="404",endpoint="task.complete"} 2.0' in lines
    assert any(
        line.startswith(
            'baton_request_duration_seconds_count{endpoint="task.complete",kind="command"'
            ',outcome="ok"} 1.0'
        )
        for line in lines
    ), page
    assert any(line.startswith("baton_request_duration_seconds_bucket{") for line in lines)
    for figure in ("projection_lag", "relay_backlog", "due_triggers", "in_flight"):
        assert any(line.startswith(f"baton_{figure} ") for line in lines), figure


async def test_json_log_lines_of_a_command_carry_its_subject_command_id_and_task(
    nats_url: str, tmp_path: Path
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("baton.adapters.service")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with running_baton(settings_for(nats_url, tmp_path / "data")) as baton:
            view = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
            await baton.client.request(
                "task.next", {"task_id": view["task_id"]}, msg_id="cmd-next-1"
            )
            with pytest.raises(BatonRequestError):
                await baton.client.request("task.start", {"task_id": "ghost"}, msg_id="cmd-2")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    nexts = [line for line in lines if line.get("command_id") == "cmd-next-1"]
    assert nexts, lines
    for line in nexts:
        assert line["subject"] == f"{baton.prefix}.task.next"
        assert line["task_id"] == view["task_id"]
        assert {"ts", "level", "logger", "message"} <= set(line)
    [ghost] = [line for line in lines if line.get("command_id") == "cmd-2"]
    assert ghost["task_id"] == "ghost" and "error 404" in ghost["message"]
