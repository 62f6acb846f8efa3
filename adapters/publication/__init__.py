"""Publication on JetStream: task progress through an outbox relay, triggers when they are due.

Both publishers follow the same rule: publish with a ``Nats-Msg-Id``, wait for JetStream's
acknowledgement, and only then record durably that the message went out. A crash between the two
republishes the same message ids, which JetStream drops as duplicates (``ack.duplicate``) within
the stream's ``duplicate_window``, so each message is stored exactly once.

The package along its seams:

- ``streams``: the two streams' names and configuration, created and reconciled at start;
- ``pump``: the loop both publishers share (wake-ups, back-off, the last flush on stop);
- ``progress``: ``ProgressRelay``, every Task event of the log to ``<prefix>.progress.<task_id>``;
- ``triggers``: ``TriggerScheduler``, each due trigger to ``<prefix>.trigger.<session_id>``.

The event store is synchronous: every store call runs in a worker thread.
"""

from baton.adapters.publication.progress import Outgoing, ProgressRelay
from baton.adapters.publication.pump import MSG_ID, PublicationError, encode
from baton.adapters.publication.streams import (
    DUPLICATE_WINDOW_S,
    StreamPolicy,
    StreamSettingsError,
    ensure_streams,
    stream_configs,
    stream_names,
)
from baton.adapters.publication.triggers import DueTriggers, TriggerScheduler

__all__ = [
    "DUPLICATE_WINDOW_S",
    "MSG_ID",
    "DueTriggers",
    "Outgoing",
    "ProgressRelay",
    "PublicationError",
    "StreamPolicy",
    "StreamSettingsError",
    "TriggerScheduler",
    "encode",
    "ensure_streams",
    "stream_configs",
    "stream_names",
]
