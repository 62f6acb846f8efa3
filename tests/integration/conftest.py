"""Fixtures of the publication tests: a fresh subject prefix, and JetStream with its streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from baton.adapters.publication import ensure_streams, stream_names


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def js(nats_url: str, prefix: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    jetstream = nc.jetstream()
    await ensure_streams(jetstream, prefix)
    try:
        yield jetstream
    finally:
        for name in stream_names(prefix):
            await jetstream.delete_stream(name)
        await nc.close()
