"""The relay's acknowledgements (adapters/publication/acks.py): each message's future says what
JetStream did with it, on the session's nats-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.js.errors
import pytest

from baton.adapters.publication.acks import Ack, AckInbox


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Any]:
    connection = await nats.connect(nats_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def subject(nc: Any) -> str:
    name = f"ACKS_{uuid.uuid4().hex[:8].upper()}"
    await nc.jetstream().add_stream(name=name, subjects=[f"{name.lower()}.>"])
    return f"{name.lower()}.x"


async def test_a_stored_message_is_acknowledged_with_its_sequence_and_a_repeat_as_duplicate(
    nc: Any, subject: str
) -> None:
    inbox = AckInbox(nc)
    first = await inbox.publish(subject, b"one", {"Nats-Msg-Id": "m1"})
    second = await inbox.publish(subject, b"two", {"Nats-Msg-Id": "m2"})
    again = await inbox.publish(subject, b"one", {"Nats-Msg-Id": "m1"})
    acks = await asyncio.wait_for(asyncio.gather(first, second, again), 5)
    assert [(a.seq, a.duplicate) for a in acks] == [(1, False), (2, False), (1, True)]
    assert all(isinstance(a, Ack) and a.stream for a in acks)
    assert inbox.pending == 0  # nothing kept for a message once it is answered
    await inbox.close()


async def test_a_refusal_fails_the_future_with_the_error_jetstream_names(
    nc: Any, subject: str
) -> None:
    inbox = AckInbox(nc)
    await asyncio.wait_for(await inbox.publish(subject, b"one", {"Nats-Msg-Id": "m1"}), 5)
    stale = await inbox.publish(
        subject, b"two", {"Nats-Msg-Id": "m2", "Nats-Expected-Last-Sequence": "7"}
    )
    with pytest.raises(nats.js.errors.BadRequestError) as refused:
        await asyncio.wait_for(stale, 5)
    assert refused.value.err_code == 10071  # wrong last sequence
    assert inbox.pending == 0
    await inbox.close()


async def test_a_subject_no_stream_takes_fails_with_no_stream_response(nc: Any) -> None:
    inbox = AckInbox(nc)
    lost = await inbox.publish(f"nowhere.{uuid.uuid4().hex}", b"x", {"Nats-Msg-Id": "m1"})
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await asyncio.wait_for(lost, 5)
    await inbox.close()


async def test_a_future_given_up_on_leaves_nothing_behind(nc: Any) -> None:
    inbox = AckInbox(nc)
    # The relay cancels what is still unanswered after its publish_timeout (or a reconnect).
    future = await inbox.publish(f"nowhere.{uuid.uuid4().hex}", b"x", {"Nats-Msg-Id": "m1"})
    future.cancel()
    await asyncio.sleep(0)
    assert inbox.pending == 0
    await inbox.close()
