"""The conformance harness (adapters/harness.py) against a live service subprocess: it finds no
break in Baton, and it does find (and shrinks) a break in a deployment that lies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import nats
import nats.errors
import pytest
from hypothesis import settings

from baton.adapters.client import BatonClient
from baton.adapters.harness import main, run_harness_async
from baton.adapters.publication import stream_names
from tests.faults.support import ServiceProcess, emit, new_prefix
from tests.processes import delete_streams

EXAMPLES = max(10, settings.default.max_examples // 2)  # ci: 30; soak: 1000


@pytest.fixture(scope="module")
def service(nats_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        nats_server.url, tmp_path_factory.mktemp("harness") / "data", new_prefix()
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()
        # A module's service: its streams outlive each test's clean-up, so they go here.
        delete_streams(nats_server.url, stream_names(process.prefix))


async def test_the_harness_finds_no_contract_break_in_baton(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await run_harness_async(service.nats_url, service.prefix, EXAMPLES)
    assert report.ok, report.summary()
    assert report.commands > EXAMPLES and report.rejected > 0 and report.checks > report.commands
    assert service.alive
    # It ran in private sessions and cleaned up (issue 13 item 15): nothing of it is live, and
    # a real worker's unscoped view of the queue holds none of its steps.
    client = await BatonClient.connect(service.nats_url, prefix=service.prefix)
    try:
        for status in ("running", "queued"):
            page = await client.tasks(status=status, limit=1000)
            assert not [t for t in page["tasks"] if t["task_name"].startswith(report.run_id)]
        queue = await client.queue(limit=1000)
        assert not [s for s in queue["steps"] if s["session_id"].startswith("_")]
    finally:
        await client.close()
    emit(capsys, report.summary())


@asynccontextmanager
async def lying_proxy(nats_url: str, real: str, fake: str) -> AsyncIterator[None]:
    """Forwards ``<fake>.>`` to ``<real>.>``, but reports queued tasks as running."""
    nc = await nats.connect(nats_url)

    async def forward(msg: nats.aio.msg.Msg) -> None:
        subject = real + msg.subject[len(fake) :]
        try:
            reply = await nc.request(subject, msg.data, timeout=10, headers=msg.headers)
        except nats.errors.NoRespondersError:  # a subject the service does not serve: say so
            error = {"code": 503, "reason": "unavailable", "message": "no responders"}
            await nc.publish(
                msg.reply,
                json.dumps({"error": error}).encode(),
                headers={"Nats-Service-Error": "no responders", "Nats-Service-Error-Code": "503"},
            )
            return
        data = reply.data
        if subject.endswith("query.task") and not reply.headers:
            view = json.loads(data)
            view["status"] = "running" if view["status"] == "queued" else view["status"]
            data = json.dumps(view).encode()
        await nc.publish(msg.reply, data, headers=reply.headers)

    sub = await nc.subscribe(f"{fake}.>", cb=forward)
    try:
        yield
    finally:
        await sub.unsubscribe()
        await nc.drain()


async def test_the_harness_reports_a_break_with_its_shrunk_program(
    service: ServiceProcess,
) -> None:
    fake = new_prefix()
    async with lying_proxy(service.nats_url, service.prefix, fake):
        # Derandomized: the same sequences (and so the same shrink) on every run.
        report = await run_harness_async(service.nats_url, fake, 30, steps=8, derandomize=True)
    assert not report.ok
    assert "the model says queued" in (report.failure or "")
    program = "\n".join(report.program)
    # Shrunk to what shows it: two creates in one session (every sequence starts with one).
    assert program.count(".create(") + program.count(".first_task(") == 2, program
    assert "CONTRACT BREAK" in report.summary()


def test_main_parses_its_arguments_and_exits_zero_without_a_break(
    service: ServiceProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--nats", service.nats_url, "--prefix", service.prefix, "--examples", "3"]
    assert main(argv) == 0
    assert "no contract break" in capsys.readouterr().out


def test_a_break_is_reported_against_a_deployment_that_does_not_answer(
    service: ServiceProcess,
) -> None:
    argv = [
        "--nats",
        service.nats_url,
        "--prefix",
        new_prefix(),
        "--examples",
        "2",
        "--timeout",
        "1",
    ]
    assert main(argv) == 1
