"""Subscriptions that are in place when a call returns (light: the CLI imports it)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client


async def flush_subscriptions(nc: Client, timeout: float = 10.0) -> None:
    """Returns once the server holds every subscription made so far on ``nc``.

    ``nc.flush()`` alone does not promise that: nats-py writes its PING straight to the socket,
    ahead of the SUB lines still queued for its flusher task, so the PONG can come back before
    the last subscriptions are registered, and a request sent right then from another
    connection meets "no responders". Waiting for the queue to empty first puts the PING after
    them.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while nc.pending_data_size > 0 and nc.is_connected:
        if asyncio.get_running_loop().time() > deadline:
            break  # flush() below times out and says so
        await asyncio.sleep(0.001)
    await nc.flush(timeout=max(1, int(timeout)))


__all__ = ["flush_subscriptions"]
