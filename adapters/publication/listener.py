"""On PostgreSQL: wake the publishers and the projections when any instance commits events.

eventsourcing's PostgreSQL recorder sends ``NOTIFY <events table>`` in every transaction that
inserts events (delivered at commit, to every listening connection of the database). One thread
per instance holds a connection of its own that ``LISTEN``s on that channel and, on each
notification, calls the wake-ups it was given (the progress relay, the trigger scheduler, the
projections' runner). So events committed by another instance are published and projected within
milliseconds, and the loops' own polling is only a safety net (``LISTENING_POLL_S``).

A lost connection is re-established (every ``reconnect_s``); meanwhile and right after, the
wake-ups are called once per attempt, so nothing committed while nobody listened waits for the
safety net.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("baton.adapters.publication")

#: The publishers' and projections' poll interval once notifications wake them (a safety net).
LISTENING_POLL_S = 1.0


class StoreListener:
    """A thread that LISTENs for committed events and calls ``wakes`` on each notification."""

    def __init__(
        self,
        connect: dict[str, Any],
        channel: str,
        wakes: Iterable[Callable[[], None]],
        *,
        reconnect_s: float = 1.0,
    ) -> None:
        self.connect = connect
        """``psycopg.connect`` keywords of the store's database."""
        self.channel = channel
        self.wakes = list(wakes)
        self.reconnect_s = reconnect_s
        self.notifications = 0
        """Notifications received (since start)."""
        self.listening = threading.Event()
        """Set while a LISTEN is in place."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> StoreListener:
        self._thread = threading.Thread(target=self._run, name="baton-listen", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _wake(self) -> None:
        for wake in self.wakes:
            try:
                wake()
            except Exception:
                log.warning("a wake-up on a store notification failed", exc_info=True)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self.connect, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.listening.set()
                    if failures:
                        log.info("listening for store notifications again")
                    failures = 0
                    self._wake()  # whatever was committed before the LISTEN
                    while not self._stop.is_set():
                        got = sum(1 for _ in conn.notifies(timeout=0.5, stop_after=1))
                        if got:
                            self.notifications += got
                            self._wake()
            except Exception as error:
                self.listening.clear()
                failures += 1
                level = logging.WARNING if failures in (1, 10) else logging.DEBUG
                log.log(level, "store notifications: %r; listening again soon", error)
                self._wake()  # the pollers' safety net may be far off: look now
                self._stop.wait(self.reconnect_s)
        self.listening.clear()


def listener_for(
    app: Any, postgres: dict[str, str] | None, wakes: Iterable[Callable[[], None]]
) -> StoreListener | None:
    """A listener for ``app``'s PostgreSQL store (None on SQLite: its one instance wakes its
    publishers itself after each command). ``postgres``: eventsourcing's POSTGRES_* settings."""
    channel = getattr(app.recorder, "channel_name", None)
    if postgres is None or not channel:
        return None
    connect = {
        "dbname": postgres["POSTGRES_DBNAME"],
        "host": postgres["POSTGRES_HOST"],
        "port": int(postgres["POSTGRES_PORT"]),
        "user": postgres["POSTGRES_USER"],
        "password": postgres["POSTGRES_PASSWORD"],
        "connect_timeout": 2,
        "application_name": "baton-listen",
    }
    return StoreListener(connect, channel, wakes)


__all__ = ["LISTENING_POLL_S", "StoreListener", "listener_for"]
