"""A live web dashboard for a Baton deployment: tasks, their plans as graphs, history with time
travel, the queue and the instances.

It is a client of the public contract only (queries, ``$SRV`` discovery, the progress and trigger
streams) on a NATS connection of its own, so it shows any deployment, including several
instances. ``baton serve`` starts it beside the service (``BATON_UI_ADDR``, default
``127.0.0.1:8600``, empty turns it off); ``baton ui --nats URL`` serves it for a remote one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import replace

from aiohttp import web

from baton.adapters.config import Settings
from baton.adapters.ui.link import LiveHub, NatsLink
from baton.adapters.ui.server import make_app

log = logging.getLogger("baton.ui")

DEFAULT_ADDR = "127.0.0.1:8600"


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8600`` for IPv6; ``:8600`` means loopback) as ``(host, port)``."""
    text = addr.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"not a HOST:PORT address: {addr!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Dashboard:
    """The dashboard's HTTP server and its NATS link, started by ``start`` and ended by
    ``close``."""

    def __init__(self, settings: Settings, addr: str = DEFAULT_ADDR) -> None:
        self.settings = settings
        self.host, self.port = parse_addr(addr)
        self.hub = LiveHub()
        self.link = NatsLink(settings, self.hub)
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listens (raising OSError when the address is taken), then connects to NATS in the
        background."""
        app = make_app(self.link, self.hub, loopback_only=_is_loopback(self.host))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.runner = runner
        bound = runner.addresses
        if self.port == 0 and bound:
            self.port = int(bound[0][1])
        self.link.start()

    async def close(self) -> None:
        self.hub.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        await self.link.close()


async def start_dashboard(settings: Settings, addr: str | None = None) -> Dashboard | None:
    """Starts the dashboard beside a service; None (with a warning) when its address is taken,
    since the service itself does not need it (e.g. a second instance on one machine)."""
    where = addr or settings.ui_addr
    if not where:
        return None
    dashboard = Dashboard(settings, where)
    try:
        await dashboard.start()
    except OSError as error:
        log.warning(
            "dashboard not started: cannot listen on %s (%s)", where, error.strerror or error
        )
        await dashboard.close()
        return None
    log.info("dashboard on %s", dashboard.url)
    return dashboard


async def run_dashboard(
    settings: Settings,
    addr: str,
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Dashboard], None] | None = None,
) -> None:
    """Serves the dashboard for the deployment ``settings`` names until ``stop`` is set, or,
    when no ``stop`` is given, until SIGINT / SIGTERM. ``on_ready`` is called once it listens."""
    loop = asyncio.get_running_loop()
    own_signals: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
                own_signals.append(sig)
    dashboard = Dashboard(replace(settings, ui_addr=addr), addr)
    try:
        await dashboard.start()
        log.info(
            "dashboard on %s for %s (prefix %s)",
            dashboard.url,
            dashboard.link.server,
            settings.subject_prefix,
        )
        if on_ready is not None:
            on_ready(dashboard)
        await stop.wait()
    finally:
        await dashboard.close()
        for sig in own_signals:
            loop.remove_signal_handler(sig)


__all__ = ["DEFAULT_ADDR", "Dashboard", "parse_addr", "run_dashboard", "start_dashboard"]
