"""Every error code of the contract over NATS: the micro headers, the JSON body, and nothing
appended to the event store by a rejected command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonRequestError
from baton.adapters.natsserver import EmbeddedNatsServer
from baton.domain.limits import MAX_REQUEST_BYTES
from tests.integration.nats_support import (
    Running,
    rejected,
    running_baton,
    settings_for,
    side_service,
)
from tests.plans import seq

# -- 400 -------------------------------------------------------------------------------------


async def test_malformed_json_is_400(baton: Running) -> None:
    error = await rejected(baton, "task.create", b'{"task_name": ', 400, "invalid_request")
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize("body", [b"", b"   ", b"[1, 2]", b"null", b'"text"', b"42"])
async def test_an_empty_body_or_a_non_object_is_400(baton: Running, body: bytes) -> None:
    await rejected(baton, "task.start", body, 400, "invalid_request")


async def test_an_unknown_field_is_400_with_pydantics_errors_in_details(baton: Running) -> None:
    error = await rejected(
        baton,
        "task.create",
        {"task_name": "t", "plan": seq("a"), "colour": "red"},
        400,
        "invalid_request",
    )
    assert error["details"]["errors"] == [
        {"loc": "colour", "type": "extra_forbidden", "msg": "Extra inputs are not permitted"}
    ]


async def test_a_wrong_type_is_400(baton: Running) -> None:
    error = await rejected(
        baton, "task.start", {"task_id": "x", "delay_s": "soon"}, 400, "invalid_request"
    )
    assert error["details"]["errors"][0]["loc"] == "delay_s"


async def test_a_bad_session_id_is_400(baton: Running) -> None:
    error = await rejected(
        baton,
        "task.create",
        {"task_name": "t", "session_id": "a.b", "plan": seq("a")},
        400,
        "invalid_request",
    )
    assert error["details"]["errors"][0]["loc"] == "session_id"
    await rejected(baton, "query.active", {"session_id": "x" * 129}, 400, "invalid_request")


async def test_a_cyclic_plan_is_400_invalid_plan(baton: Running) -> None:
    cyclic = {
        "steps": [
            {"step_name": "a", "depends_on": ["b"]},
            {"step_name": "b", "depends_on": ["a"]},
        ]
    }
    error = await rejected(
        baton, "task.create", {"task_name": "t", "plan": cyclic}, 400, "invalid_plan"
    )
    assert "cycle" in error["message"]


async def test_an_invalid_replan_is_400_and_changes_nothing(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a"))
    dangling = {"steps": [{"step_name": "a", "depends_on": ["ghost"]}]}
    await rejected(
        baton, "task.replan", {"task_id": task["task_id"], "plan": dangling}, 400, "invalid_plan"
    )


async def test_a_query_limit_out_of_range_is_400(baton: Running) -> None:
    await rejected(baton, "query.tasks", {"limit": 0}, 400, "invalid_request")
    await rejected(baton, "query.queue", {"limit": 1001}, 400, "invalid_request")


# -- 404 -------------------------------------------------------------------------------------


async def test_an_unknown_task_is_404(baton: Running) -> None:
    for subject in ("task.start", "task.next", "task.complete", "task.cancel", "query.task"):
        await rejected(baton, subject, {"task_id": "no-such-task"}, 404, "not_found")
    await rejected(baton, "query.history", {"task_id": "no-such-task"}, 404, "not_found")


async def test_an_unknown_step_is_404(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a"))
    body = {"task_id": task["task_id"], "step_id": f"{task['task_id']}.99"}
    await rejected(baton, "step.complete", body, 404, "not_found")


async def test_a_version_the_task_never_had_is_404(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a"))
    await rejected(
        baton, "query.history", {"task_id": task["task_id"], "version": 999}, 404, "not_found"
    )


# -- 409 -------------------------------------------------------------------------------------


async def test_an_invalid_transition_is_409(baton: Running) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    await baton.client.cancel_task(task_id=task["task_id"])
    step_b = task["steps"][1]["step_id"]
    error = await rejected(
        baton,
        "step.complete",
        {"task_id": task["task_id"], "step_id": step_b},
        409,
        "invalid_transition",
    )
    assert "cancelled" in error["message"]
    await rejected(baton, "task.next", {"task_id": task["task_id"]}, 409, "invalid_transition")
    await rejected(baton, "task.start", {"task_id": task["task_id"]}, 409, "invalid_transition")
    await rejected(baton, "task.complete", {"task_id": task["task_id"]}, 409, "invalid_transition")


# -- 413 -------------------------------------------------------------------------------------


async def test_a_field_over_its_limit_is_413_on_a_default_server(baton: Running) -> None:
    instruction = "x" * (64 * 1024 + 1)
    error = await rejected(
        baton, "task.create", {"task_name": "t", "task_instruction": instruction}, 413, "too_large"
    )
    assert error["details"]["errors"][0]["loc"] == "task_instruction"
    steps = [{"step_name": f"s{i}", "description": ""} for i in range(1001)]
    await rejected(
        baton, "task.create", {"task_name": "t", "plan": {"steps": steps}}, 413, "too_large"
    )


async def test_a_body_over_the_limit_is_413_even_on_a_default_server(baton: Running) -> None:
    big = b'{"task_name": "' + b"x" * MAX_REQUEST_BYTES + b'"}'
    await rejected(baton, "task.create", big, 413, "too_large")


@pytest.fixture
def big_payload_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server that carries messages above Baton's limit (the default max_payload is
    1 MiB, the same as the limit, so the server itself refuses larger requests)."""
    with EmbeddedNatsServer(tmp_path / "js", max_payload=4 * 1024 * 1024) as server:
        yield server.url


async def test_an_oversized_request_is_413_before_parsing(
    big_payload_server: str, tmp_path: Path
) -> None:
    settings = settings_for(big_payload_server, tmp_path / "data")
    async with running_baton(settings) as baton:
        big = b'{"task_name": "' + b"x" * MAX_REQUEST_BYTES + b'"}'
        error = await rejected(baton, "task.create", big, 413, "too_large")
        assert error["details"] == {"size": len(big), "limit": MAX_REQUEST_BYTES}
        # Not parsed: even garbage of that size is a 413, not a 400.
        await rejected(baton, "query.task", b"\xff" * (MAX_REQUEST_BYTES + 1), 413, "too_large")
        # Exactly at the limit is parsed (and here rejected for what it says, not its size).
        at_limit = b'{"task_name": 1' + b" " * (MAX_REQUEST_BYTES - 16) + b"}"
        assert len(at_limit) == MAX_REQUEST_BYTES
        await rejected(baton, "task.create", at_limit, 400, "invalid_request")


# -- 503 (the planner) is in test_nats_planner.py; 500 ------------------------------------------


class BrokenQueries:
    """A read side with a bug: every query raises something that is not a BatonError."""

    def catch_up(self) -> int:
        return 0

    def task(self, task_id: str) -> dict[str, Any]:
        raise RuntimeError("a bug in the views")


async def test_an_unexpected_exception_is_500_without_its_internals(
    baton: Running, caplog: pytest.LogCaptureFixture
) -> None:
    async with side_service(baton, queries=BrokenQueries()) as prefix:
        msg = await baton.nc.request(f"{prefix}.query.task", b'{"task_id": "x"}', timeout=5)
    headers = msg.headers or {}
    error = json.loads(msg.data)["error"]
    assert headers["Nats-Service-Error-Code"] == "500"
    assert error["code"] == 500
    assert error["reason"] == "internal_error"
    assert "a bug in the views" not in error["message"]
    assert "a bug in the views" in caplog.text  # the traceback is in the service's log


# -- the client ----------------------------------------------------------------------------


async def test_the_client_raises_the_contracts_error(baton: Running) -> None:
    with pytest.raises(BatonRequestError) as caught:
        await baton.client.complete_step(task_id="nope", step_id="nope.0")
    assert caught.value.code == 404
    assert caught.value.reason == "not_found"
    assert "nope" in caught.value.message


# -- start-up ------------------------------------------------------------------------------


async def test_every_endpoint_answers_as_soon_as_start_returns(baton: Running) -> None:
    """``start()`` returns once the server holds every subscription: a request sent right after
    it from another connection never meets "no responders" (nats-py's ``flush`` writes its PING
    ahead of subscriptions still queued for the socket, so a PONG alone proves nothing)."""
    assert baton.baton.projections is not None
    for _ in range(20):
        async with side_service(baton) as prefix:
            # The last endpoints subscribed are the ones a too-early PONG leaves behind.
            msg = await baton.nc.request(f"{prefix}.query.history", b'{"task_id": "x"}', timeout=5)
        assert (msg.headers or {})["Nats-Service-Error-Code"] == "404"
