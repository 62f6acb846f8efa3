"""Forged stream messages (issue 11, item 9): a client that may publish on the stream subjects
pre-publishes a fake with the id it expects the real message to carry, hoping JetStream drops
the real one as a duplicate. The ids Baton publishes with are keyed by a secret of the
deployment, so the real message still goes out. (Keeping clients off the stream subjects is the
NATS configuration's job: tests/faults/test_nats_security.py.)"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.config import Settings, event_store_env
from baton.adapters.publication import stream_names
from baton.adapters.streamids import MAC_HEX, deployment_secret
from baton.domain.ids import task_uuid
from baton.domain.services import BatonApp
from tests.integration.nats_support import Running, wait_for
from tests.plans import seq

KEYED = re.compile(rf"^(?P<natural>.+):[0-9a-f]{{{MAC_HEX}}}$")


async def messages(baton: Running, stream: str, subject: str) -> list[tuple[dict[str, Any], str]]:
    """(body, Nats-Msg-Id) of every message of ``stream`` on ``subject``, in order."""
    js = baton.nc.jetstream()
    info = await js.stream_info(stream)
    if not info.state.messages:
        return []
    found = []
    for number in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, number)
        if msg.subject == subject:
            found.append((json.loads(msg.data or b"null"), (msg.headers or {})["Nats-Msg-Id"]))
    return found


async def test_a_fake_progress_message_with_the_next_events_natural_id_drops_nothing(
    baton: Running,
) -> None:
    task = await baton.client.create_task(task_name="t", plan=seq("a", "b"))
    task_id = task["task_id"]
    stream, subject = stream_names(baton.prefix)[0], f"{baton.prefix}.progress.{task_id}"

    async def published() -> list[tuple[dict[str, Any], str]]:
        return await messages(baton, stream, subject)

    await wait_for(lambda: _has(published, 1), timeout=10)
    seen = await published()
    version = seen[-1][0]["version"]
    # The id a client could compute from the task id and what it has read so far:
    natural = f"{task_uuid(task_id)}:{version + 1}"
    assert all(KEYED.match(msg_id) for _, msg_id in seen), seen
    assert KEYED.match(seen[-1][1])["natural"] == f"{task_uuid(task_id)}:{version}"  # type: ignore[index]
    js = baton.nc.jetstream()
    fake = json.dumps({"task_id": task_id, "version": version + 1, "forged": True}).encode()
    assert not (await js.publish(subject, fake, headers={"Nats-Msg-Id": natural})).duplicate

    await baton.client.start_task(task_id=task_id)

    async def real_one_out() -> bool:
        return any(
            body.get("version") == version + 1 and not body.get("forged")
            for body, _ in await published()
        )

    await wait_for(real_one_out, timeout=10)
    assert baton.baton.relay is not None and baton.baton.relay.duplicates == 0


async def test_a_fake_trigger_with_a_trigger_id_from_the_queue_drops_nothing(
    baton: Running,
) -> None:
    task = await baton.client.create_task(task_name="t", session_id="s1", plan=seq("a"))
    await baton.client.start_task(task_id=task["task_id"], delay_s=1)
    pending = (await baton.client.queue(session_id="s1"))["triggers"]
    trigger_id = pending[0]["trigger_id"]  # listed to every client
    stream, subject = stream_names(baton.prefix)[1], f"{baton.prefix}.trigger.s1"
    js = baton.nc.jetstream()
    fake = json.dumps({"trigger_id": trigger_id, "forged": True}).encode()
    assert not (await js.publish(subject, fake, headers={"Nats-Msg-Id": trigger_id})).duplicate

    async def real_one_out() -> bool:
        return any(
            body.get("trigger_id") == trigger_id and not body.get("forged")
            for body, _ in await messages(baton, stream, subject)
        )

    await wait_for(real_one_out, timeout=15)
    real = [m for b, m in await messages(baton, stream, subject) if not b.get("forged")]
    assert KEYED.match(real[0])["natural"] == trigger_id  # type: ignore[index]


def test_the_secret_is_made_once_per_store_and_shared_by_its_instances(tmp_path: Path) -> None:
    def secret_of(data_dir: Path) -> bytes:
        app = BatonApp(env=event_store_env(Settings(data_dir=data_dir)))
        try:
            return deployment_secret(app.recorder)
        finally:
            app.close()

    first = secret_of(tmp_path / "one")
    assert len(first) == 32
    assert secret_of(tmp_path / "one") == first  # a restart, or a second instance
    assert secret_of(tmp_path / "two") != first  # another deployment


@pytest.mark.postgres
def test_instances_starting_together_on_postgresql_agree_on_the_secret(
    postgres_db: dict[str, Any],
) -> None:
    apps = [BatonApp(env=event_store_env(Settings(postgres_url=postgres_db["url"]))) for _ in "ab"]
    try:

        async def both() -> list[bytes]:
            return list(
                await asyncio.gather(
                    *(asyncio.to_thread(deployment_secret, app.recorder) for app in apps)
                )
            )

        secrets_seen = asyncio.run(both())
    finally:
        for app in apps:
            app.close()
    assert secrets_seen[0] == secrets_seen[1]
    assert len(secrets_seen[0]) == 32


async def _has(read: Any, count: int) -> bool:
    return len(await read()) >= count
