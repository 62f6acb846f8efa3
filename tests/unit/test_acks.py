"""AckInbox against a stand-in connection whose subscribe takes a turn of the loop, as a
nats-py subscribe does when its flusher queue is full."""

from __future__ import annotations

import asyncio
from typing import Any

from baton.adapters.publication.acks import AckInbox


class SlowConnection:
    def __init__(self) -> None:
        self.subscriptions: list[str] = []
        self.unsubscribed = 0
        self.sent: list[str] = []
        self._inboxes = 0

    def new_inbox(self) -> str:
        self._inboxes += 1
        return f"_INBOX.test{self._inboxes}"

    async def subscribe(self, subject: str, cb: Any) -> Any:
        await asyncio.sleep(0)
        self.subscriptions.append(subject)
        connection = self

        class Subscription:
            async def unsubscribe(self) -> None:
                connection.unsubscribed += 1

        return Subscription()

    async def publish(self, subject: str, body: bytes, reply: str, headers: Any) -> None:
        self.sent.append(reply)


async def test_concurrent_first_publishes_share_one_subscription_and_close_ends_it() -> None:
    nc = SlowConnection()
    inbox = AckInbox(nc)
    futures = await asyncio.gather(
        *(inbox.publish("s", b"x", {"Nats-Msg-Id": str(i)}) for i in range(5))
    )
    assert len(nc.subscriptions) == 1
    prefix = nc.subscriptions[0].removesuffix("*")
    assert all(reply.startswith(prefix) for reply in nc.sent)
    assert len(set(nc.sent)) == 5  # a reply subject of its own per message
    assert inbox.pending == 5
    await inbox.close()
    assert nc.unsubscribed == 1
    assert all(f.cancelled() for f in futures) and inbox.pending == 0
