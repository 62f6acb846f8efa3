"""Fixtures of the publication tests: a fresh subject prefix, and JetStream with its streams
(deleted after the test by tests/conftest.py, as every stream a test makes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from baton.adapters.publication import ensure_streams


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def js(nats_url: str, prefix: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    jetstream = nc.jetstream()
    try:
        await ensure_streams(jetstream, prefix)
        yield jetstream
    finally:
        await nc.close()
