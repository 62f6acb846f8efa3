"""Security: Baton connects to a nats-server that demands a user and password, a token, or TLS,
when its BATON_NATS_* settings say how, and does not serve (saying why in its log) when they are
missing or wrong. Under the configuration the README documents (docs/nats-secure.conf), clients
use Baton but can neither publish on its streams nor have it reply into them; without
credentials Baton says it runs open."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from baton.adapters.client import BatonClient
from baton.adapters.natsserver import find_nats_server, free_port, nats_answers
from baton.adapters.subscriptions import flush_subscriptions
from tests.faults.support import ServiceProcess, new_prefix
from tests.integration.nats_support import wait_for

USER, PASSWORD, TOKEN = "baton", "s3cret-pw", "s3cret-token"


class SecuredServer:
    def __init__(
        self,
        directory: Path,
        *args: str,
        scheme: str = "nats",
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        base = [str(find_nats_server()), "-a", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            [*base, "-js", "-sd", str(directory / "js"), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 10
        while not nats_answers(f"nats://127.0.0.1:{self.port}", timeout=0.2):
            assert self.process.poll() is None and time.monotonic() < deadline, "no nats-server"
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def user_server(tmp_path: Path) -> Iterator[SecuredServer]:
    server = SecuredServer(tmp_path, "--user", USER, "--pass", PASSWORD)
    yield server
    server.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[SecuredServer]:
    server = SecuredServer(tmp_path, "--auth", TOKEN)
    yield server
    server.stop()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[SecuredServer, Path]]:
    """A server with a certificate signed by a throwaway CA; yields it and the CA file."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp_path)

    rsa = ("-newkey", "rsa:2048", "-nodes")
    openssl(
        "req", "-x509", *rsa, "-days", "1", "-subj", "/CN=ca", "-keyout", "ca.key", "-out", "ca.pem"
    )
    openssl("req", *rsa, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    signing = ("-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-extfile", "san.ext")
    openssl("x509", "-req", "-in", "server.csr", *signing, "-days", "1", "-out", "server.pem")
    server = SecuredServer(
        tmp_path,
        "--tls",
        "--tlscert",
        str(tmp_path / "server.pem"),
        "--tlskey",
        str(tmp_path / "server.key"),
        scheme="tls",
    )
    yield server, tmp_path / "ca.pem"
    server.stop()


async def round_trip(url: str, prefix: str, **options: object) -> None:
    async with await BatonClient.connect(url, prefix=prefix, **options) as client:
        task = await client.create_task(task_name="secure", plan={"steps": [{"step_name": "a"}]})
        assert (await client.next_step(task_id=task["task_id"]))["status"] == "completed"


def refused(service: ServiceProcess, why: str) -> str:
    """Starts the service expecting it to log ``why`` and never become ready; returns its log.
    (Waits for the log line, not for a fixed time: a loaded machine starts Python slowly.)"""
    service.start(timeout=60, until=why)
    log = service.all_logs()
    assert "baton: ready" not in log
    return log


async def test_baton_connects_with_a_user_and_password(
    user_server: SecuredServer, tmp_path: Path
) -> None:
    env = {"BATON_NATS_USER": USER, "BATON_NATS_PASSWORD": PASSWORD}
    service = ServiceProcess(user_server.url, tmp_path / "data", new_prefix(), env=env)
    await asyncio.to_thread(service.start)
    try:
        await round_trip(user_server.url, service.prefix, user=USER, password=PASSWORD)
        assert PASSWORD not in service.log()
    finally:
        service.kill()


async def test_baton_connects_with_a_token(token_server: SecuredServer, tmp_path: Path) -> None:
    env = {"BATON_NATS_TOKEN": TOKEN}
    service = ServiceProcess(token_server.url, tmp_path / "data", new_prefix(), env=env)
    await asyncio.to_thread(service.start)
    try:
        await round_trip(token_server.url, service.prefix, token=TOKEN)
        assert TOKEN not in service.log()
    finally:
        service.kill()


async def test_baton_verifies_the_servers_certificate_with_the_configured_ca(
    tls_server: tuple[SecuredServer, Path], tmp_path: Path
) -> None:
    import ssl

    server, ca = tls_server
    env = {"BATON_NATS_TLS_CA": str(ca)}
    service = ServiceProcess(server.url, tmp_path / "data", new_prefix(), env=env)
    await asyncio.to_thread(service.start)
    try:
        await round_trip(server.url, service.prefix, tls=ssl.create_default_context(cafile=ca))
    finally:
        service.kill()
    # Without the CA the certificate is not trusted: no service.
    untrusted = ServiceProcess(server.url, tmp_path / "data2", new_prefix())
    try:
        await asyncio.to_thread(refused, untrusted, "CERTIFICATE_VERIFY_FAILED")
    finally:
        untrusted.kill()


@pytest.mark.parametrize(
    "env", [{}, {"BATON_NATS_USER": USER, "BATON_NATS_PASSWORD": "wrong"}], ids=["none", "wrong"]
)
async def test_without_the_right_credentials_baton_does_not_serve_and_logs_why(
    user_server: SecuredServer, tmp_path: Path, env: dict[str, str]
) -> None:
    service = ServiceProcess(user_server.url, tmp_path / "data", new_prefix(), env=env)
    try:
        # Refused credentials end the process with a clear message instead of retrying forever.
        log = await asyncio.to_thread(refused, service, "refused Baton's credentials")
        assert "Authorization Violation" in log, log[-2000:]
        assert await asyncio.to_thread(service.wait, 30) == 2
    finally:
        service.kill()


@pytest.fixture
def nkey_server(tmp_path: Path) -> Iterator[tuple[SecuredServer, Path]]:
    """A server that admits one nkey user; yields it and a file holding the user's seed."""
    import nkeys

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    config = tmp_path / "nkey.conf"
    config.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    server = SecuredServer(tmp_path, "-c", str(config))
    yield server, seed_file
    server.stop()


async def test_baton_connects_with_an_nkey_seed(
    nkey_server: tuple[SecuredServer, Path], tmp_path: Path
) -> None:
    server, seed_file = nkey_server
    env = {"BATON_NATS_NKEY_SEED": str(seed_file)}
    service = ServiceProcess(server.url, tmp_path / "data", new_prefix(), env=env)
    await asyncio.to_thread(service.start)
    try:
        await round_trip(server.url, service.prefix, nkeys_seed=str(seed_file))
        assert seed_file.read_text() not in service.log()
    finally:
        service.kill()


# -- the documented secure configuration ---------------------------------------------------

SECURE_CONF = Path(__file__).resolve().parents[2] / "docs" / "nats-secure.conf"
PASSWORDS = {
    "BATON_SERVICE_PASSWORD": "service-pw",
    "BATON_PUBLISHER_PASSWORD": "publisher-pw",
    "BATON_CLIENT_PASSWORD": "client-pw",
    "BATON_PLANNER_PASSWORD": "planner-pw",
}
CLIENT = {"user": "client", "password": "client-pw"}
ALL = DeliverPolicy.ALL


@pytest.fixture
def secure_server(tmp_path: Path) -> Iterator[SecuredServer]:
    server = SecuredServer(tmp_path, "-c", str(SECURE_CONF), env=PASSWORDS)
    yield server
    server.stop()


async def stream_count(js: Any, stream: str) -> int:
    return int((await js.stream_info(stream)).state.messages)


async def test_under_the_secure_configuration_clients_use_baton_but_cannot_forge_its_streams(
    secure_server: SecuredServer, tmp_path: Path
) -> None:
    url = secure_server.url
    env = {
        "BATON_NATS_USER": "baton",
        "BATON_NATS_PASSWORD": "service-pw",
        "BATON_NATS_PUBLISHER_USER": "baton-publisher",
        "BATON_NATS_PUBLISHER_PASSWORD": "publisher-pw",
    }
    service = ServiceProcess(url, tmp_path / "data", "baton", env=env)  # the file's prefix
    await asyncio.to_thread(service.start)
    planner = await nats.connect(url, user="planner", password="planner-pw")
    violations: list[str] = []

    async def remember(error: Exception) -> None:
        violations.append(str(error))

    client = await BatonClient.connect(url, prefix="baton", error_cb=remember, **CLIENT)
    try:
        assert "NATS without credentials" not in service.log()

        async def plan(msg: Msg) -> None:
            await msg.respond(
                json.dumps({"steps": [{"step_name": "a"}, {"step_name": "b"}]}).encode()
            )

        await planner.subscribe("baton.planner.plan", cb=plan)
        await flush_subscriptions(planner)

        # A client uses Baton: a create planned by the planner, a trigger, steps, queries.
        task = await client.create_task(task_name="secure", session_id="s1")
        task_id = task["task_id"]
        assert (await client.start_task(task_id=task_id))["trigger"]
        assert (await client.next_step(task_id=task_id))["status"] == "queued"
        events = (await client.history(task_id=task_id))["events"]

        # It reads the streams Baton's publisher wrote.
        js = client.nc.jetstream()

        async def all_out() -> bool:
            progress = await stream_count(js, "BATON_PROGRESS")
            return progress == len(events) and await stream_count(js, "BATON_TRIGGERS") >= 1

        await wait_for(all_out, timeout=15)
        triggers = await stream_count(js, "BATON_TRIGGERS")
        # And follows them as `baton watch` does (an ordered consumer, with flow control).
        followed: list[Msg] = []

        async def follow(msg: Msg) -> None:
            followed.append(msg)

        watch = await js.subscribe(
            f"baton.progress.{task_id}", cb=follow, ordered_consumer=True, deliver_policy=ALL
        )
        await wait_for(lambda: _at_least(followed, len(events)), timeout=15)
        await watch.unsubscribe()
        assert [json.loads(m.data)["version"] for m in followed] == [e["version"] for e in events]

        # It cannot publish on them: the server refuses, and says so to the client.
        await client.nc.publish(f"baton.progress.{task_id}", b'{"forged": true}')
        await client.nc.publish("baton.trigger.s1", b'{"forged": true}')
        await client.nc.flush()
        await wait_for(lambda: _at_least(violations, 2), timeout=10)
        assert all("permissions violation" in v for v in violations), violations

        # It cannot make Baton reply into them: the request is refused, unanswered.
        body = json.dumps({"task_name": "injected", "plan": {"steps": [{"step_name": "x"}]}})
        await client.nc.publish("baton.task.create", body.encode(), reply="baton.trigger.s1")
        await client.nc.flush()
        refused = "refused a request whose reply subject 'baton.trigger.s1'"
        await wait_for(lambda: _logged(service, refused), timeout=10)

        # Baton's service user itself may only answer: the streams are the publisher's.
        denied: list[str] = []

        async def note(error: Exception) -> None:
            denied.append(str(error))

        as_service = await nats.connect(url, user="baton", password="service-pw", error_cb=note)
        try:
            await as_service.publish("baton.trigger.s1", b'{"forged": true}')
            await as_service.flush()
            await wait_for(lambda: _at_least(denied, 1), timeout=10)
            assert "permissions violation" in denied[0], denied
        finally:
            await as_service.close()

        # Nor remove them.
        with pytest.raises(nats.errors.Error):
            await js.delete_stream("BATON_TRIGGERS")

        assert await stream_count(js, "BATON_PROGRESS") == len(events)
        assert await stream_count(js, "BATON_TRIGGERS") == triggers
        assert (await client.tasks())["tasks"][0]["task_id"] == task_id  # nothing injected
    finally:
        await client.close()
        await planner.close()
        service.kill()


async def test_without_credentials_baton_says_that_it_runs_open(
    nats_url: str, tmp_path: Path
) -> None:
    service = ServiceProcess(nats_url, tmp_path / "data", new_prefix())
    await asyncio.to_thread(service.start)
    try:
        assert "NATS without credentials" in service.log()
        assert "Securing NATS" in service.log()
    finally:
        service.kill()


async def _at_least(items: list[Any], count: int) -> bool:
    return len(items) >= count


async def _logged(service: ServiceProcess, text: str) -> bool:
    return text in service.log()
