"""The service's background work: the views' catch-up, the progress relay, the trigger scheduler.

None of it answers a request, yet together it costs about as much CPU as answering (applying
each event to the views, reading it again to publish it, waiting for JetStream's acks). In the
service's process it competes with the replies for the one GIL. So ``baton serve`` runs it in a
process of its own, the **publisher process** (``BATON_PUBLISHER_PROCESS``, on by default;
settings made in code keep it in-process, as embedding and most tests want):

- ``Publication`` is the work itself, wherever it runs: the relay and the scheduler as asyncio
  tasks, the views' catch-up in a thread, and on PostgreSQL the store listener that wakes them
  when any instance commits.
- ``PublisherProcess`` is the service's side of the split: it starts
  ``python -m baton.adapters.background`` with the service's settings on its stdin, wakes it
  after every command (one byte on the same pipe: SQLite cannot be subscribed to), restarts it
  when it dies, and stops it last, after the commands in flight, so what they stored is
  published before the service exits.
- The child exits when its stdin closes: a service killed with SIGKILL takes its publisher with
  it, and the next start's publisher resumes from the tracked positions. Publication is exactly
  once either way (message ids within the duplicate window, positions recorded after acks).

Queries still read their own writes: the service's projections object catches up on demand
before answering (whoever applies a batch first records its position; the other finds it done).
The lease keeper stays in the service: it appends events, and the service is the only writer of
a SQLite store's aggregates.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import nats

from baton.adapters import logs
from baton.adapters.config import Settings, event_store_env, postgres_params, publisher_settings
from baton.adapters.publication import ProgressRelay, StreamPolicy, TriggerScheduler
from baton.adapters.publication import listener as listening
from baton.adapters.publication.listener import StoreListener, listener_for
from baton.adapters.streamids import MessageIds, deployment_secret
from baton.domain.services import BatonApp
from baton.projections import Projections

log = logging.getLogger("baton.background")

#: How often the projections' background thread applies new events (queries catch up anyway).
PROJECTION_INTERVAL_S = 0.2
#: The relay records its position at most this often (each record is a write beside the
#: service's commits; a crash republishes at most this much, as duplicates JetStream drops).
RELAY_RECORD_INTERVAL_S = 0.1
#: Waits between restarts of a publisher process that keeps dying (doubling up to the last).
RESTART_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)
#: How long a stopping publisher process may take to publish what is stored, then it is killed.
STOP_TIMEOUT_S = 15.0


class Publication:
    """The relay, the scheduler and the views' catch-up of one process, started and stopped
    together; ``wake()`` after a commit makes them look now."""

    def __init__(
        self,
        app: BatonApp,
        projections: Projections,
        js: Any,
        settings: Settings,
        ids: MessageIds,
    ) -> None:
        policy = StreamPolicy.from_settings(settings)
        prefix = settings.subject_prefix
        self.projections = projections
        self.relay = ProgressRelay(
            app, js, prefix, policy=policy, ids=ids, record_interval=RELAY_RECORD_INTERVAL_S
        )
        self.scheduler = TriggerScheduler(projections, js, prefix, policy=policy, ids=ids)
        self.interval = PROJECTION_INTERVAL_S
        self.listener: StoreListener | None = listener_for(
            app,
            postgres_params(settings.postgres_url) if settings.postgres_url else None,
            (self.relay.wake, self.scheduler.wake, projections.wake),
        )
        self._stop = asyncio.Event()
        self._stop_projections = threading.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.listener is not None:  # woken on every commit: polling is only a safety net
            self.listener.start()
            self.relay.poll_interval = self.interval = listening.LISTENING_POLL_S
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.relay.run(self._stop), name="progress-relay"),
            loop.create_task(self.scheduler.run(self._stop), name="trigger-scheduler"),
        ]
        self._thread = threading.Thread(
            target=self.projections.run,
            args=(self._stop_projections, self.interval),
            name="baton-projections",
            daemon=True,
        )
        self._thread.start()

    def wake(self) -> None:
        """After a commit: the relay and the scheduler look now. The views follow through the
        scheduler, whose every pump first catches them up (it reads the due triggers from
        them); the views' own thread is left to its interval. Waking that thread too made a
        second catch-up per command, each a views transaction of its own for a few events
        (``python -m bench cpu`` shows the publisher's CPU per command)."""
        self.relay.wake()
        self.scheduler.wake()

    async def stop(self) -> None:
        """Stops the publishers (each makes one last, bounded attempt to flush), then the
        listener and the views' thread."""
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)
        self._stop_projections.set()
        self.projections.wake()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)


class PublisherProcess:
    """The service's handle on its publisher process: started, woken, restarted, stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.restarts = 0
        """How many times the process was started again after it died."""
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._pending = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        await self._spawn()
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name="publisher-process"
        )

    async def _spawn(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "baton.adapters.background",
            stdin=asyncio.subprocess.PIPE,
            # Its logs go where the service's go; it reads nothing but its stdin.
            stdout=None,
            stderr=None,
            # Not in the terminal's process group: Ctrl-C stops the service, which stops it.
            start_new_session=True,
        )
        assert self._process.stdin is not None
        self._process.stdin.write(base64.b64encode(pickle.dumps(self.settings)) + b"\n")
        log.info("publisher process %d started", self._process.pid)

    def wake(self) -> None:
        """One byte down the pipe (at most one waiting at a time): the child looks now."""
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            return
        if process.stdin.is_closing():
            return  # it died: the supervisor restarts it, and the new one looks at start
        if self._pending or process.stdin.transport.get_write_buffer_size() > 0:
            # One wake-up waits already (here, or unread in the pipe): another adds nothing,
            # and a publisher that does not read must not make this buffer grow.
            return
        try:
            process.stdin.write(b"w")
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            return  # as above
        self._pending = True
        asyncio.get_running_loop().call_soon(self._sent)

    def _sent(self) -> None:
        self._pending = False

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            process = self._process
            assert process is not None
            code = await process.wait()
            if self._stopping:
                return
            delay = RESTART_DELAYS_S[min(failures, len(RESTART_DELAYS_S) - 1)]
            failures += 1
            log.error(
                "publisher process %d exited (%s); restarting in %.1f s", process.pid, code, delay
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                await self._spawn()
                self.restarts += 1
            except Exception:
                log.exception("could not start the publisher process")

    async def stop(self) -> None:
        """Closes its stdin (the child publishes what is stored, then exits); kills it if it
        takes longer than ``STOP_TIMEOUT_S``."""
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            with contextlib.suppress(Exception):
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("publisher process %d did not stop in time; killing it", process.pid)
                process.kill()
                await process.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)


# -- the child --------------------------------------------------------------------------------

#: How long a publisher whose service is gone may take to publish what is stored and stop; then
#: it exits whatever it waits on (a NATS server that went with the service, say).
ORPHAN_GRACE_S = 10.0


class ServicePipe:
    """The child's end of the pipe from the service, read by a thread of its own: each chunk is
    a wake-up, its end (the service stopped, or died) the signal to stop. Reading starts before
    anything else, so a service that dies while its publisher starts is noticed too, and once
    the pipe ends the process exits within ``ORPHAN_GRACE_S`` however its loop is stuck."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event, fd: int = 0) -> None:
        self.loop = loop
        self.stop = stop
        self.fd = fd
        self.on_wake: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._read, name="baton-pipe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _call(self, fn: Callable[[], Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            self.loop.call_soon_threadsafe(fn)

    def _wake(self) -> None:
        if self.on_wake is not None:
            self.on_wake()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            self._call(self._wake)
        log.info("the service's pipe closed: stopping")
        self._call(self.stop.set)
        time.sleep(ORPHAN_GRACE_S)
        log.error("still running %.0f s after the service's pipe closed: exiting", ORPHAN_GRACE_S)
        os._exit(1)


async def run_child(settings: Settings, fd: int = 0) -> None:
    """The publisher process: its own store connections, views and NATS connection; publishes
    until the service's pipe on ``fd`` ends (the service stopped, or died) or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pipe = ServicePipe(loop, stop, fd)
    pipe.start()
    from baton.adapters.bootstrap import connect_options, tune_gc

    app = await asyncio.to_thread(lambda: BatonApp(event_store_env(settings)))
    projections = await asyncio.to_thread(Projections, app)
    publisher = publisher_settings(settings) or settings
    publication: Publication | None = None

    async def on_reconnected() -> None:  # nudge: do not wait for the next poll
        if publication is not None:
            publication.wake()

    async def on_error(error: Exception) -> None:
        log.warning("NATS (publisher process): %s", str(error) or type(error).__name__)

    nc = await nats.connect(
        **{**connect_options(publisher), "name": "baton-publisher"},
        reconnected_cb=on_reconnected,
        error_cb=on_error,
    )
    try:
        # The service created and reconciled the streams before starting this process; one
        # deleted since is made again by the publisher that finds it missing.
        js = nc.jetstream()
        ids = MessageIds(await asyncio.to_thread(deployment_secret, app.recorder))
        publication = Publication(app, projections, js, settings, ids)
        publication.start()
        pipe.on_wake = publication.wake
        tune_gc()
        log.info("publisher process ready")
        await stop.wait()
    finally:
        if publication is not None:
            await publication.stop()
        try:
            await asyncio.wait_for(nc.drain(), 5.0)
        except Exception:  # also: no server to drain to (it went with the service)
            with contextlib.suppress(Exception):
                await nc.close()
        projections.close()
        app.close()
        log.info("publisher process stopped")


def _read_line(fd: int) -> bytes:
    """One line from ``fd``, read byte by byte (nothing after it is consumed: those are the
    wake-ups, for ``ServicePipe``)."""
    line = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return bytes(line)
        line += byte


def main() -> None:
    """``python -m baton.adapters.background``: the first line of stdin is the service's
    settings; every byte after it is a wake-up; its end is the signal to stop."""
    logs.configure(os.environ.get("BATON_LOG_LEVEL", "INFO"))
    line = _read_line(0)
    if not line.strip():
        raise SystemExit("baton.adapters.background is started by baton serve (settings on stdin)")
    settings: Settings = pickle.loads(base64.b64decode(line))  # from our parent, the service
    asyncio.run(run_child(settings))


if __name__ == "__main__":
    main()
