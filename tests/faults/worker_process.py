"""A worker process for the fault suite: ``python -m tests.faults.worker_process URL PREFIX NAME
CONCURRENCY LEASE_S``. Runs the worker loop on every claimable step (each takes 0.1-0.5 s and
returns who did it) until SIGTERM; the suite SIGKILLs it mid-step."""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import sys
from typing import Any

from baton.adapters.client import BatonClient
from baton.adapters.worker import work


async def main(url: str, prefix: str, name: str, concurrency: int, lease_s: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def handle(step: dict[str, Any]) -> Any:
        await asyncio.sleep(random.uniform(0.1, 0.5))
        return {"by": name, "claim_id": step["claim_id"]}

    client = await BatonClient.connect(
        url, prefix=prefix, timeout=2.0, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    async with client:
        logging.info("%s ready", name)
        await work(
            client,
            handle,
            concurrency=concurrency,
            lease_s=lease_s,
            worker=name,
            stop=stop,
            poll_s=0.1,
        )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    url, prefix, name, concurrency, lease_s = sys.argv[1:6]
    asyncio.run(main(url, prefix, name, int(concurrency), float(lease_s)))
