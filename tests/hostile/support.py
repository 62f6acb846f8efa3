"""What the property-based hostile suites aim at: a Baton process, a client of it on a loop
thread of its own (hypothesis' tests are synchronous), and its event store read directly."""

from __future__ import annotations

from baton.adapters.client import BatonClient
from baton.adapters.config import event_store_env
from baton.adapters.harness import LoopThread
from baton.domain.services import BatonApp
from tests.processes import ServiceProcess


class LiveService:
    """A started ``ServiceProcess``, a client of it, and its store; requests time out after
    ``timeout`` seconds."""

    def __init__(self, service: ServiceProcess, timeout: float) -> None:
        self.service = service
        self.timeout = timeout
        self.loop = LoopThread()
        self.client = self.loop.run(
            BatonClient.connect(service.nats_url, prefix=service.prefix, timeout=timeout)
        )
        self.app = BatonApp(event_store_env(service.settings()))

    def notifications(self) -> int:
        """The last notification id of the event store."""
        return int(self.app.recorder.max_notification_id() or 0)

    def raw(self, subject: str, body: bytes) -> tuple[dict[str, str], bytes]:
        """A request as any NATS client sends it: the reply's headers and raw body."""

        async def send() -> tuple[dict[str, str], bytes]:
            msg = await self.client.nc.request(
                f"{self.service.prefix}.{subject}", body, timeout=self.timeout
            )
            return dict(msg.headers or {}), msg.data

        return self.loop.run(send())

    def close(self) -> None:
        self.loop.run(self.client.close())
        self.loop.close()
        self.app.close()
