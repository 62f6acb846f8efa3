"""The contract table (``baton.adapters.contract``) is the one place a subject is declared: the
service, the typed client, the schema generator and the CLI each agree with it."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from baton.adapters import contract
from baton.adapters import schema as s
from baton.adapters.cli import CliError, build_parser
from baton.adapters.client import BatonClient
from baton.adapters.messages import COMMANDS, QUERIES
from baton.domain import services
from tests.integration.nats_support import new_prefix, running_baton, settings_for

ROWS = {row.name: row for row in contract.SERVED}

#: How the CLI test fills each row's command (after the row's `cli` words).
CLI_ARGS: dict[str, list[str]] = {
    "task.create": ["n", "--step", "a: do a"],
    "task.start": ["T"],
    "task.next": ["T"],
    "task.replan": ["T", "--step", "a: do a"],
    "task.complete": ["T"],
    "task.fail": ["T"],
    "task.cancel": ["T"],
    "task.context": ["T", "k", "v"],
    "step.claim": ["--task", "T"],
    "step.complete": ["T.0"],
    "step.fail": ["T.0"],
    "step.skip": ["T.0"],
    "step.retry": ["T.0"],
    "step.heartbeat": ["T.0", "--claim-id", "C"],
    "query.active": ["S"],
    "query.task": ["T"],
    "query.tasks": [],
    "query.queue": [],
    "query.history": ["T"],
}

#: BatonClient methods that are transport, not a subject of the contract.
TRANSPORT = {"connect", "close", "request", "request_raw"}


def test_each_subject_and_each_request_model_appears_once() -> None:
    rows = [*contract.SERVED, *contract.PLANNER]
    assert len({r.name for r in rows}) == len(rows)
    assert len({r.request for r in rows}) == len(rows)
    assert all(r.summary and r.summary.endswith(".") for r in rows)
    assert {r.kind for r in contract.SERVED} == {"command", "query"}


def test_the_wire_tables_are_views_of_the_contract() -> None:
    assert {r.name: r.request for r in contract.SERVED if r.kind == "command"} == COMMANDS
    assert {r.name: r.request for r in contract.SERVED if r.kind == "query"} == QUERIES


def test_the_domain_scopes_idempotency_by_command_which_is_by_subject() -> None:
    # The domain scopes a command id by the command's class (it declares no subject); that is
    # scoping by subject only while each subject has a class of its own.
    rows = list(contract.commands())
    assert len({r.request for r in rows}) == len(rows)
    # Records written by 0.1 named their subject: each maps to the class serving it now.
    by_name = {r.name: r.request.__name__ for r in rows}
    assert {k: by_name[k] for k in services.LEGACY_KINDS} == services.LEGACY_KINDS


# -- the service ---------------------------------------------------------------------------------


async def test_the_service_serves_exactly_the_table(nats_url: str, tmp_path: Path) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        msg = await baton.nc.request("$SRV.INFO.baton", b"", timeout=5)
        infos = [json.loads(msg.data)]
        mine = [i for i in infos if i["metadata"].get("prefix") == baton.prefix]
        assert mine, infos
        served = {e["subject"]: (e["name"], e["metadata"]["kind"]) for e in mine[0]["endpoints"]}
    assert served == {r.address(baton.prefix): (r.endpoint, r.kind) for r in contract.SERVED}


async def test_every_query_row_is_answered_by_the_read_side_it_names(
    nats_url: str, tmp_path: Path
) -> None:
    async with running_baton(settings_for(nats_url, tmp_path)) as baton:
        task = await baton.client.create_task(
            task_name="t", session_id="s1", plan={"steps": [{"step_name": "a", "description": "a"}]}
        )
        assert (await baton.client.active(session_id="s1"))["task_id"] == task["task_id"]
        assert (await baton.client.task(task_id=task["task_id"]))["task_name"] == "t"
        assert [t["task_id"] for t in (await baton.client.tasks())["tasks"]] == [task["task_id"]]
        queue = await baton.client.queue()
        assert [st["step_name"] for st in queue["steps"]] == ["a"]
        history = await baton.client.history(task_id=task["task_id"])
        assert history["events"][0]["type"] == "Created"


# -- the client ----------------------------------------------------------------------------------


class Recorder:
    """A responder on every subject under a prefix: records each request's subject and answers
    the contract's 404 error reply, so any caller stops after its first request."""

    def __init__(self) -> None:
        self.subjects: list[str] = []


@pytest.fixture
async def recorder(nats_url: str) -> AsyncIterator[tuple[str, Recorder]]:
    prefix = new_prefix()
    nc = await nats.connect(nats_url)
    record = Recorder()

    async def answer(msg: Msg) -> None:
        record.subjects.append(msg.subject)
        body = {"error": {"code": 404, "reason": "not_found", "message": "recorded"}}
        await nc.publish(
            msg.reply,
            json.dumps(body).encode(),
            headers={"Nats-Service-Error": "recorded", "Nats-Service-Error-Code": "404"},
        )

    await nc.subscribe(f"{prefix}.>", cb=answer)
    await nc.flush()
    try:
        yield prefix, record
    finally:
        await nc.drain()


def _public_methods() -> Iterator[str]:
    for name, _member in inspect.getmembers(BatonClient, inspect.iscoroutinefunction):
        if not name.startswith("_") and name not in TRANSPORT:
            yield name


def test_every_public_client_method_is_a_row_and_every_row_has_one() -> None:
    assert set(_public_methods()) == {r.client for r in contract.SERVED}


async def test_every_client_method_sends_on_its_rows_subject(
    nats_url: str, recorder: tuple[str, Recorder]
) -> None:
    prefix, record = recorder
    client = await BatonClient.connect(nats_url, prefix=prefix, timeout=5)
    try:
        for row in contract.SERVED:
            method = getattr(client, row.client)
            required = {
                name: "x"
                for name, p in inspect.signature(method).parameters.items()
                if p.default is inspect.Parameter.empty
            }
            record.subjects.clear()
            with pytest.raises(Exception, match="recorded"):
                await method(**required)
            assert record.subjects == [row.address(prefix)], row.client
    finally:
        await client.close()


# -- the CLI -------------------------------------------------------------------------------------


def _cli_rows(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict[str, str]:
    """``{subject: "words of the command"}`` for every command the parser maps to a row."""
    found: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_cli_rows(sub, (*path, name)))
    subject = parser.get_default("subject")
    if subject is not None:
        assert subject not in found, f"two commands for {subject}"
        found[subject] = " ".join(path)
    return found


def test_every_row_has_one_cli_command_and_it_is_the_rows() -> None:
    assert _cli_rows(build_parser()) == {r.name: r.cli for r in contract.SERVED}
    assert set(CLI_ARGS) == set(ROWS), "give the new row's CLI arguments in CLI_ARGS"


def _run_cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as error:
        return error.exit_code


async def test_every_cli_command_of_a_row_sends_on_its_rows_subject(
    nats_url: str, recorder: tuple[str, Recorder]
) -> None:
    prefix, record = recorder
    for row in contract.SERVED:
        record.subjects.clear()
        argv = ["--nats", nats_url, "--prefix", prefix, *row.cli.split(), *CLI_ARGS[row.name]]
        code = await asyncio.to_thread(_run_cli, argv)
        assert code == 2, row.cli  # the recorder's 404
        assert record.subjects == [row.address(prefix)], row.cli


# -- the documents -------------------------------------------------------------------------------


def test_the_asyncapi_document_has_one_operation_per_row_with_its_models() -> None:
    doc = s.asyncapi("baton")
    operations = {
        op["channel"]["$ref"].removeprefix("#/channels/"): op
        for op in doc["operations"].values()
        if op["tags"][0]["name"] != "published"
    }
    by_address = {doc["channels"][cid]["address"]: (cid, op) for cid, op in operations.items()}
    rows = [*contract.SERVED, *contract.PLANNER]
    assert set(by_address) == {r.address("baton") for r in rows}
    for row in rows:
        cid, op = by_address[row.address("baton")]
        assert op["summary"] == row.summary
        assert op["tags"] == [{"name": row.kind}]
        assert list(doc["channels"][cid]["messages"]) == [row.request.__name__]
        replies = [m["$ref"].rsplit("/", 1)[-1] for m in op["reply"]["messages"]]
        assert replies == [row.reply.__name__, "ErrorReply"]
