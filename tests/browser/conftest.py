"""The browser tests' fixtures: Baton as `make run` starts it (a process, with its dashboard on a
port of its own) on the session's nats-server, a typed client of it, and a page in a real
headless Chromium (Debian's ``chromium`` package) driven by Playwright.

Playwright's own browser download is not used (nor reachable here): it launches
/usr/bin/chromium. Without it these tests skip with the reason, unless BATON_REQUIRE_BROWSER is
set (``.ci/run`` installs chromium and sets it), in which case they fail.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonClient
from baton.adapters.natsserver import free_port
from baton.adapters.publication import stream_names
from tests.integration.nats_support import new_prefix
from tests.processes import ServiceProcess, delete_streams

CHROMIUM = Path(os.environ.get("BATON_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("BATON_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} and BATON_REQUIRE_BROWSER is set", pytrace=False)
    pytest.skip(f"{reason}; set BATON_REQUIRE_BROWSER=1 to make this a failure")


class Deployment:
    """A Baton process serving its dashboard at ``url``."""

    def __init__(self, service: ServiceProcess, url: str) -> None:
        self.service = service
        self.url = url
        self.nats_url = service.nats_url
        self.prefix = service.prefix

    def wait_until_following(self, timeout: float = 20.0) -> None:
        """Until the dashboard follows the streams (it shows only what is new from then on)."""
        deadline = time.monotonic() + timeout
        status: Any = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=5) as response:
                    status = json.loads(response.read())
                if status.get("following"):
                    return
            except OSError as error:
                status = error
            time.sleep(0.1)
        raise AssertionError(f"the dashboard does not follow the streams: {status}")


def start_deployment(nats_url: str, data_dir: Path, name: str = "baton") -> Deployment:
    port = free_port()
    service = ServiceProcess(
        nats_url,
        data_dir,
        new_prefix(),
        env={"BATON_UI_ADDR": f"127.0.0.1:{port}"},
        name=name,
    )
    service.start()
    deployment = Deployment(service, f"http://127.0.0.1:{port}")
    try:
        deployment.wait_until_following()
    except BaseException:
        service.kill()
        raise
    return deployment


@pytest.fixture(scope="module")
def deployment(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_chromium()
    running = start_deployment(nats_url, tmp_path_factory.mktemp("browser") / "data")
    try:
        yield running
    finally:
        if running.service.alive:
            running.service.terminate()
        delete_streams(nats_url, stream_names(running.prefix))


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[BatonClient]:
    async with await BatonClient.connect(deployment.nats_url, prefix=deployment.prefix) as c:
        yield c


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A page 1280x800 that fails the test on any script error."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        await context.close()
    assert not errors, f"script errors in the page: {errors}"
