"""Hostile input over NATS against one live service (a subprocess, on a nats-server that carries
payloads above Baton's 1 MiB limit): malformed JSON, wrong types, huge payloads, deep nesting,
unicode and control characters, path tricks and NUL bytes in ids, unknown ids and transitions the
lifecycle does not allow, sent to every subject. Every reply is a 4xx of the contract (headers
and JSON body agree), the service never crashes, and a rejected request appends nothing."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from baton.adapters.client import BatonRequestError
from baton.adapters.messages import COMMANDS, QUERIES, parse
from baton.adapters.natsserver import EmbeddedNatsServer
from baton.domain.errors import BatonError
from baton.domain.limits import MAX_REQUEST_BYTES
from tests.faults.support import ServiceProcess, emit, new_prefix
from tests.hostile.support import LiveService
from tests.processes import around_traceback

SUBJECTS = sorted([*COMMANDS, *QUERIES])
MODELS = {**COMMANDS, **QUERIES}
EXAMPLES = max(100, settings.default.max_examples * 5)  # ci: 300; soak: 10,000


@pytest.fixture(scope="module")
def big_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private nats-server with max_payload 4 MB, so payloads well above Baton's limit arrive."""
    directory = tmp_path_factory.mktemp("hostile-nats")
    with EmbeddedNatsServer(directory / "js", max_payload=4 * 1024 * 1024) as server:
        yield server.url


class Target(LiveService):
    """The live service, and tasks to aim at."""

    def __init__(self, service: ServiceProcess) -> None:
        super().__init__(service, timeout=15)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.tried: Counter[str] = Counter()


@pytest.fixture(scope="module")
def target(big_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    service = ServiceProcess(big_nats, tmp_path_factory.mktemp("hostile") / "data", new_prefix())
    service.start()
    target = Target(service)
    try:
        plan = {"steps": [{"step_name": n} for n in ("a", "b", "c")]}
        client, run = target.client, target.loop.run
        running = run(client.create_task(task_name="running", plan=plan))
        done = run(client.create_task(task_name="done", plan=plan))
        run(client.complete_task(task_id=done["task_id"]))
        cancelled = run(client.create_task(task_name="cancelled", plan=plan))
        run(client.cancel_task(task_id=cancelled["task_id"]))
        for name, task in (("running", running), ("done", done), ("cancelled", cancelled)):
            target.tasks[name] = run(client.task(task_id=task["task_id"]))
        yield target
    finally:
        target.close()
        service.kill()


# -- strategies --------------------------------------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "../../etc/passwd",
            "..",
            "/",
            "a\x00b",
            "\x00",
            "task/../../x",
            "C:\\Windows\\system32",
            "%2e%2e%2f",
            "\u202eevil",
            "\ud7ff\ufffd\U0001f600",
            "baton.>",
            "*",
            " ",
            "\n\r\t",
            "x" * 300,
        ]
    ),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | nasty_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@st.composite
def wrong_shapes(draw: st.DrawFn) -> tuple[str, bytes]:
    """A JSON object with the subject's fields (and maybe others) holding anything."""
    subject = draw(st.sampled_from(SUBJECTS))
    fields = list(MODELS[subject].model_fields)
    keys = draw(st.lists(st.sampled_from(fields) | nasty_text, max_size=5, unique=True))
    body = {key: draw(json_values) for key in keys}
    return subject, json.dumps(body).encode()


@st.composite
def deep_nesting(draw: st.DrawFn) -> tuple[str, bytes]:
    depth = draw(st.integers(33, 5000))
    subject, field = draw(
        st.sampled_from(
            [("step.complete", "result"), ("task.context", "value"), ("task.create", "plan")]
        )
    )
    head = b'{"task_id": "t", "step_id": "t.0", "key": "k", "task_name": "n", '
    return subject, head + f'"{field}": '.encode() + deep(depth) + b"}"


@st.composite
def huge(draw: st.DrawFn) -> tuple[str, bytes]:
    subject = draw(st.sampled_from(SUBJECTS))
    size = draw(st.integers(MAX_REQUEST_BYTES + 1, MAX_REQUEST_BYTES + 100_000))
    filler = draw(st.sampled_from([b"x", b"\x00", b" ", b"\xff"]))
    return subject, b'{"task_name": "' + filler * size + b'"}'


raw_bytes = st.tuples(
    st.sampled_from(SUBJECTS),
    st.one_of(
        st.binary(max_size=300),
        st.sampled_from(
            [b"", b" ", b"null", b"[]", b"1", b'"s"', b"{", b"{}}", b'{"a":}', b"\xff\xfe"]
        ),
    ),
)


def transitions(target: Target) -> st.SearchStrategy[tuple[str, bytes]]:
    """Well-formed requests the state of the target tasks does not allow, or ids it lacks."""
    running, done, cancelled = (target.tasks[k] for k in ("running", "done", "cancelled"))
    r, d, c = running["task_id"], done["task_id"], cancelled["task_id"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("task.start", {"task_id": d}),
        ("task.next", {"task_id": c}),
        ("task.complete", {"task_id": d}),
        ("task.cancel", {"task_id": c}),
        ("task.fail", {"task_id": d}),
        ("task.replan", {"task_id": c, "plan": {"steps": [{"step_name": "z"}]}}),
        ("task.context", {"task_id": d, "key": "k", "value": 1}),
        ("step.complete", {"task_id": d, "step_id": f"{d}.0"}),
        ("step.complete", {"task_id": r, "step_id": f"{r}.2"}),  # blocked
        ("step.retry", {"task_id": r, "step_id": f"{r}.0"}),  # not failed
        ("step.skip", {"task_id": c, "step_id": f"{c}.1"}),
        ("step.fail", {"task_id": r, "step_id": f"{r}.99"}),
        ("task.replan", {"task_id": r, "plan": {"steps": []}}),
        ("task.replan", {"task_id": r, "plan": {"steps": [{"step_name": "a"}] * 2}}),
        (
            "task.replan",
            {"task_id": r, "plan": {"steps": [{"step_name": "q", "depends_on": ["q"]}]}},
        ),
        ("query.history", {"task_id": r, "version": 10_000}),
    ]
    ids = st.tuples(
        st.sampled_from(["task.start", "task.next", "task.cancel", "query.task", "query.history"]),
        nasty_text.filter(bool),
    ).map(lambda p: (p[0], {"task_id": p[1]}))
    steps = st.tuples(
        st.sampled_from(["step.complete", "step.fail", "step.skip", "step.retry"]),
        st.sampled_from([r, d, c]) | nasty_text.filter(bool),
        nasty_text.filter(bool),
    ).map(lambda p: (p[0], {"task_id": p[1], "step_id": p[2]}))
    sessions = nasty_text.filter(lambda s: not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", s)).map(
        lambda s: ("query.active", {"session_id": s})
    )
    return st.one_of(st.sampled_from(cases), ids, steps, sessions).map(
        lambda p: (p[0], json.dumps(p[1]).encode())
    )


def harmless_if_valid(subject: str, body: bytes) -> bool:
    """A request that parses and would rightly succeed (a create, a claim, a read of nothing
    in particular) is not hostile: leave it out."""
    try:
        request = parse(MODELS[subject], body)
    except BatonError:
        return False
    del request
    return subject in ("task.create", "step.claim", "query.tasks", "query.queue", "query.active")


# -- the law -----------------------------------------------------------------------------------


def check_rejected(target: Target, subject: str, body: bytes) -> int:
    before = target.notifications()
    headers, data = target.raw(subject, body)
    code_text = headers.get("Nats-Service-Error-Code")
    assert code_text is not None, f"{subject} {body[:200]!r} was accepted: {data[:300]!r}"
    error = json.loads(data)["error"]
    assert set(error) <= {"code", "reason", "message", "details"}
    assert error["code"] == int(code_text), (error, headers)
    assert error["code"] in (400, 404, 409, 413), (subject, body[:200], error)
    assert isinstance(error["reason"], str) and error["reason"]
    assert isinstance(error["message"], str) and error["message"]
    assert headers["Nats-Service-Error"] == " ".join(error["message"].split())
    assert target.notifications() == before, f"{subject} {body[:200]!r} appended events"
    target.tried[str(error["code"])] += 1
    return int(error["code"])


def test_every_hostile_request_gets_a_4xx_and_appends_nothing(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = st.one_of(
        raw_bytes, wrong_shapes(), deep_nesting(), huge(), transitions(target), transitions(target)
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=hostile)
    def law(request: tuple[str, bytes]) -> None:
        subject, body = request
        assume(not harmless_if_valid(subject, body))
        check_rejected(target, subject, body)

    law()
    assert target.service.alive, target.service.log()

    # Still serving: the micro service answers a ping and a query; the target tasks unchanged.
    async def ping() -> dict[str, Any]:
        msg = await target.client.nc.request("$SRV.PING.baton", b"", timeout=5)
        return dict(json.loads(msg.data))

    assert target.loop.run(ping())["name"] == "baton"
    for name, view in target.tasks.items():
        now = target.loop.run(target.client.task(task_id=view["task_id"]))
        assert now["version"] == view["version"], name
    log = target.service.log()
    assert "Traceback" not in log, around_traceback(log)
    tried = sum(target.tried.values())
    assert tried >= EXAMPLES // 2
    assert {"400", "404", "409", "413"} <= set(target.tried), target.tried
    emit(capsys, f"hostile: {tried} hostile requests tried, all 4xx: {dict(target.tried)}")


@given(name=nasty_text.filter(lambda s: 0 < len(s) <= 256))
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_path_tricks_in_task_names_give_safe_ids_and_workspaces(target: Target, name: str) -> None:
    if not name.strip():  # a blank name names nothing: 400, nothing created
        with pytest.raises(BatonRequestError) as refused:
            target.loop.run(
                target.client.create_task(task_name=name, plan={"steps": [{"step_name": "a"}]})
            )
        assert refused.value.code == 400
        return
    view = target.loop.run(
        target.client.create_task(task_name=name, plan={"steps": [{"step_name": "a"}]})
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]+", view["task_id"]), view["task_id"]
    root = (target.service.data_dir / "workspaces").resolve()
    workspace = Path(view["workspace"]).resolve()
    assert workspace.parent == root, workspace
    assert view["task_name"] == name
    target.loop.run(target.client.cancel_task(task_id=view["task_id"]))
