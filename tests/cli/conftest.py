"""One live Baton service per module (``baton serve`` as a subprocess) and a ``baton`` runner."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from baton.adapters.client import BatonClient
from baton.adapters.publication import stream_names
from tests.processes import delete_streams

BIN = Path(sys.executable).parent
BATON = str(BIN / "baton")


@dataclass
class Service:
    """A running ``baton serve`` and the environment that reaches it."""

    env: dict[str, str]
    data_dir: Path
    log: Path

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 30,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``baton ARGS`` to completion; with ``check``, fails on a non-zero exit."""
        done = subprocess.run(
            [BATON, *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check and done.returncode != 0:
            pytest.fail(
                f"baton {' '.join(args)} exited {done.returncode}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )
        return done

    def json(self, *args: str) -> Any:
        """Runs ``baton ARGS --json`` and parses its stdout."""
        return json.loads(self.run(*args, "--json").stdout)

    def api(self, method: str, **kwargs: Any) -> Any:
        """Calls the service in-process through BatonClient: quick set-up for the CLI tests
        (the commands under test always run as a ``baton`` subprocess)."""

        async def call() -> Any:
            client = await BatonClient.connect(self.env["BATON_NATS_URL"], prefix=self.prefix)
            try:
                return await getattr(client, method)(**kwargs)
            finally:
                await client.close()

        return asyncio.run(call())

    @property
    def prefix(self) -> str:
        return self.env["BATON_SUBJECT_PREFIX"]

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [BATON, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )


def cli_env(nats_url: str, prefix: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "NO_COLOR"))}
    env.update(
        BATON_NATS_URL=nats_url,
        BATON_SUBJECT_PREFIX=prefix,
        BATON_DATA_DIR=str(data_dir),
        BATON_LOG_LEVEL="INFO",
        BATON_UI_ADDR="",  # no dashboard on the shared port 8600
        PYTHONUNBUFFERED="1",
    )
    env.pop("FORCE_COLOR", None)
    return env


@pytest.fixture(scope="module")
def service(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``baton serve --nats URL`` with its own data dir and a unique subject prefix."""
    data_dir = tmp_path_factory.mktemp("baton-cli")
    prefix = f"cli{uuid.uuid4().hex[:8]}"
    env = cli_env("nats://127.0.0.1:1", prefix, data_dir)  # --nats must win over the env
    log = data_dir / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [BATON, "serve", "--nats", nats_url], env=env, stdout=sink, stderr=sink
        )
    try:
        deadline = time.monotonic() + 30
        while " ready" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"baton serve did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield Service(cli_env(nats_url, prefix, data_dir), data_dir, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        delete_streams(nats_url, stream_names(prefix))
