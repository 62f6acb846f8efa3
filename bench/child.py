"""Processes the benchmarks start: ``python -m bench.child baton|echo``.

Each runs in its own interpreter, so the service under test never shares a GIL with the load
generator, and the Baton service and the echo baseline are measured under the same conditions.
Each prints ``READY`` on stdout once it answers, and stops cleanly on SIGTERM.

- ``baton``: ``baton.adapters.bootstrap.serve(Settings.from_env())``, the service as ``baton serve``
  runs it (NATS URL, data dir, Postgres URL from the ``BATON_*`` environment). For experiments,
  ``BENCH_SWITCH_INTERVAL_S`` sets the service's GIL switch interval (``sys.setswitchinterval``;
  Python's default is 5 ms, which a reply waiting on a busy thread can pay at each hand-off).
- ``echo``: a bare ``nats.micro`` service, queue group ``bench``, whose one endpoint
  ``bench.echo`` replies with the request body: the ceiling of a Python NATS responder.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import sys
from typing import Any


def _ready() -> None:
    print("READY", flush=True)


async def _until_signalled() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def echo() -> None:
    import nats
    from nats.micro import add_service

    stop = await _until_signalled()
    nc = await nats.connect(os.environ["BATON_NATS_URL"])
    service = await add_service(nc, name="bench-echo", version="1.0.0", queue_group="bench")

    async def handler(request: Any) -> None:
        await request.respond(request.data)

    await service.add_endpoint(name="echo", subject="bench.echo", handler=handler)
    await nc.flush()
    _ready()
    await stop.wait()
    await service.stop()
    await nc.drain()


async def baton() -> None:
    from baton.adapters.bootstrap import serve
    from baton.adapters.config import Settings

    switch = os.environ.get("BENCH_SWITCH_INTERVAL_S")
    if switch:  # an experiment knob: the GIL's switch interval in the service (default 5 ms)
        sys.setswitchinterval(float(switch))

    stop = await _until_signalled()
    ready = asyncio.Event()
    settings = Settings.from_env()
    kwargs: dict[str, Any] = {}
    params = inspect.signature(serve).parameters
    if "ready" in params:
        kwargs["ready"] = ready
    if "stop" in params:
        kwargs["stop"] = stop
    server = asyncio.create_task(serve(settings, **kwargs))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({server, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if server.done():
        server.result()  # raises what made it stop
        return
    _ready()
    await server


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which == "echo":
        asyncio.run(echo())
    elif which == "baton":
        asyncio.run(baton())
    else:
        sys.exit("usage: python -m bench.child baton|echo")


if __name__ == "__main__":
    main()
