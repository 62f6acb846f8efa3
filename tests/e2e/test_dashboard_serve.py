"""The dashboard as users start it: beside the service (`make run`, BATON_UI_ADDR) and on its
own for a remote deployment (`baton ui --nats URL`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from baton.adapters.natsserver import free_port
from tests.processes import ServiceProcess

pytestmark = pytest.mark.slow

BATON = str(Path(sys.executable).parent / "baton")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def status_of(base: str, deadline_s: float = 15.0) -> dict[str, object]:
    """The dashboard's /api/status once its NATS connection follows the streams."""
    deadline = time.monotonic() + deadline_s
    while True:
        code, body = get(f"{base}/api/status")
        status = json.loads(body)
        if code == 200 and status.get("following"):
            return dict(status)
        if time.monotonic() > deadline:
            raise AssertionError(f"the dashboard did not connect: {status}")
        time.sleep(0.1)


def test_the_service_serves_the_dashboard_at_the_address_it_prints(
    nats_url: str, tmp_path: Path
) -> None:
    port = free_port()
    service = ServiceProcess(
        nats_url, tmp_path / "data", "uiserve", env={"BATON_UI_ADDR": f"127.0.0.1:{port}"}
    )
    service.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert f"dashboard on {base}" in service.log()
        assert status_of(base)["prefix"] == "uiserve"
        code, page = get(f"{base}/")
        assert code == 200 and b'data-page="tasks"' in page
    finally:
        assert service.terminate() == 0


def test_an_empty_address_turns_the_dashboard_off(nats_url: str, tmp_path: Path) -> None:
    service = ServiceProcess(nats_url, tmp_path / "data", "uioff", env={"BATON_UI_ADDR": ""})
    service.start()
    try:
        assert "dashboard" not in service.log()
    finally:
        assert service.terminate() == 0


def test_baton_ui_serves_the_dashboard_of_a_remote_deployment(
    nats_url: str, tmp_path: Path
) -> None:
    service = ServiceProcess(nats_url, tmp_path / "data", "uiremote")
    service.start()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    log = tmp_path / "ui.log"
    with (
        log.open("w") as errors,
        subprocess.Popen(
            [
                BATON,
                "ui",
                "--nats",
                nats_url,
                "--prefix",
                "uiremote",
                "--addr",
                f"127.0.0.1:{port}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        ) as ui,
    ):
        try:
            assert ui.stdout is not None
            first = ui.stdout.readline()
            base = f"http://127.0.0.1:{port}"
            assert first.startswith(f"dashboard on {base} "), first + log.read_text()
            status_of(base)
            code, body = get(f"{base}/api/instances")
            assert code == 200
            assert len(json.loads(body)["instances"]) == 1
            ui.send_signal(signal.SIGTERM)
            assert ui.wait(10) == 0, log.read_text()
        finally:
            if ui.poll() is None:
                ui.kill()
            assert service.terminate() == 0
