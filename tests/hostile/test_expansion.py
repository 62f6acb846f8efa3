"""Oversized by expansion (issue 11): small requests whose events, views or replies are large —
plans of up to 1,000 steps with long (emoji) names and descriptions, big contexts, replans that
grow a task, pages over such tasks — against a live service on a nats-server with the default
1 MiB ``max_payload``. Every request is answered (a reply or a contract error; never silence,
never a 500), and the progress relay is never stalled: it catches up with the event log."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baton.adapters.natsserver import EmbeddedNatsServer
from baton.adapters.publication import ProgressRelay
from baton.domain.limits import MAX_REQUEST_BYTES
from tests.faults.support import ServiceProcess, emit, new_prefix
from tests.hostile.support import LiveService
from tests.processes import around_traceback

EXAMPLES = max(20, settings.default.max_examples // 3)  # ci: 20


class Target(LiveService):
    """The live service, and what the tests saw of it."""

    def __init__(self, service: ServiceProcess) -> None:
        super().__init__(service, timeout=60)
        self.task_ids: list[str] = []
        self.answers: Counter[str] = Counter()
        self.largest: tuple[int, int, str] = (0, 0, "")
        """The largest reply seen: (its size, its request's size, subject)."""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    directory = tmp_path_factory.mktemp("expansion")
    with EmbeddedNatsServer(directory / "js") as server:  # the default 1 MiB max_payload
        service = ServiceProcess(server.url, directory / "data", new_prefix())
        service.start()
        target = Target(service)
        try:
            yield target
        finally:
            target.close()
            service.kill()


#: Texts up to 256 characters, often the longest, in 1-, 2- and 4-byte UTF-8 characters.
texts = st.tuples(st.sampled_from(["x", "é", "😀"]), st.sampled_from([1, 64, 256])).map(
    lambda p: p[0] * p[1]
)


@st.composite
def plans(draw: st.DrawFn, prefix: str = "s") -> dict[str, Any]:
    """Up to 1,000 steps with long names and descriptions, sequential or chained by depends_on,
    cut to fit a request."""
    count = draw(st.sampled_from([100, 500, 1000]))
    name, description = draw(texts), draw(texts)
    chained = draw(st.booleans())
    steps: list[dict[str, Any]] = []
    size = 100
    for i in range(count):
        step: dict[str, Any] = {
            "step_name": f"{prefix}{i}-{name}"[:256],
            "description": description,
        }
        if chained and i:
            step["depends_on"] = [steps[i - 1]["step_name"]]
        size += len(json.dumps(step, ensure_ascii=False).encode()) + 2
        if size > MAX_REQUEST_BYTES - 8_000:
            break
        steps.append(step)
    return {"steps": steps}


@st.composite
def expanding(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A request; a replan names its task by an index into the tasks made so far (resolved when
    sent, so what is drawn does not depend on the state)."""
    kind = draw(st.sampled_from(["plan", "context", "replan", "page", "queue"]))
    if kind == "plan":
        return "task.create", {"task_name": draw(texts), "plan": draw(plans())}
    if kind == "context":
        steps = draw(st.integers(1, 20))
        blob = "c" * draw(st.sampled_from([50_000, 200_000, 400_000]))
        return "task.create", {
            "task_name": draw(texts),
            "context": {"blob": blob},
            "plan": {"steps": [{"step_name": f"c{i}"} for i in range(steps)]},
        }
    if kind == "replan":
        return "task.replan", {"task_id": draw(st.integers(0, 999)), "plan": draw(plans("r"))}
    if kind == "page":
        return "query.tasks", {"limit": draw(st.sampled_from([3, 50, 1000]))}
    return "query.queue", {"limit": draw(st.sampled_from([3, 50, 1000]))}


def check_answered(target: Target, subject: str, payload: dict[str, Any]) -> None:
    if subject == "task.replan":
        if not target.task_ids:
            return
        payload = {**payload, "task_id": target.task_ids[payload["task_id"] % len(target.task_ids)]}
    body = json.dumps(payload, ensure_ascii=False).encode()
    assert len(body) <= MAX_REQUEST_BYTES
    headers, data = target.raw(subject, body)  # a timeout here is the silence this forbids
    target.largest = max(target.largest, (len(data), len(body), subject))
    code = headers.get("Nats-Service-Error-Code")
    if code is None:
        reply = json.loads(data)
        if subject == "task.create":
            target.task_ids.append(reply["task_id"])
        target.answers["ok"] += 1
        return
    error = json.loads(data)["error"]
    assert error["code"] == int(code)
    assert headers["Nats-Service-Error"] == " ".join(error["message"].split())
    assert error["code"] in (400, 404, 409, 413, 503), (subject, error)
    target.answers[code] += 1


def test_requests_that_expand_are_answered_and_publication_keeps_up(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def law(data: st.DataObject) -> None:
        subject, payload = data.draw(expanding())
        check_answered(target, subject, payload)

    # The cases of the issue first: a 400 KB context, then pages and queues that would repeat it.
    big_context = {"blob": "c" * 400_000}
    for _ in range(3):
        check_answered(
            target,
            "task.create",
            {"task_name": "ctx", "context": big_context, "plan": {"steps": [{"step_name": "a"}]}},
        )
    for subject in ("query.queue", "query.tasks"):
        check_answered(target, subject, {"limit": 1000})
    law()
    assert target.service.alive, target.service.log()[-3000:]
    log = target.service.log()
    assert "Traceback" not in log, around_traceback(log)

    # The relay is never stalled by what these produced: it reaches the end of the log.
    relay = ProgressRelay(target.app, js=None, prefix=target.service.prefix)
    deadline = time.monotonic() + 120
    while relay.read_position() < (target.app.recorder.max_notification_id() or 0):
        assert time.monotonic() < deadline, "the progress relay fell behind for good"
        time.sleep(0.2)
    reply, request, subject = target.largest
    emit(
        capsys,
        f"expansion: {sum(target.answers.values())} requests, answers {dict(target.answers)}; "
        f"largest reply {reply:,} bytes ({subject}, request {request:,} bytes)",
    )
