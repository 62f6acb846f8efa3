"""Message ids of Baton's streams that clients cannot compute.

JetStream drops a message whose ``Nats-Msg-Id`` it has seen within the stream's duplicate
window. With ids a client can compute (``<aggregate id>:<version>`` of the next event, a
``trigger_id`` listed by ``query.queue``), a client allowed to publish on the stream subjects
could publish a fake first and have the real message dropped as a duplicate. So each id is the
natural id followed by a MAC of it, keyed by a secret of the deployment: ``<natural id>:<32 hex>``.
Every instance of a deployment computes the same id for the same message (a republished batch is
still recognised as a duplicate); no client can.

The secret is made once, at random, and kept in the event store's own database (table
``baton_stream_secret``, beside the relay's tracked position): in ``events.sqlite`` on SQLite,
in the events' schema on PostgreSQL. Losing it (a new database) changes the ids of messages
published from then on, as the relay's position would be lost with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from eventsourcing.postgres import PostgresRecorder
from eventsourcing.sqlite import SQLiteRecorder

from baton.projections.store import postgres_ddl_lock, sqlite_write

SECRET_TABLE = "baton_stream_secret"

#: Hex digits of the MAC in an id: 128 bits.
MAC_HEX = 32


class MessageIds:
    """Turns a natural id into the stream's ``Nats-Msg-Id``: the id and its keyed MAC."""

    def __init__(self, secret: bytes | None) -> None:
        self._secret = secret

    @property
    def keyed(self) -> bool:
        return self._secret is not None

    def __call__(self, natural: str) -> str:
        if self._secret is None:
            return natural
        mac = hmac.new(self._secret, natural.encode(), hashlib.sha256).hexdigest()[:MAC_HEX]
        return f"{natural}:{mac}"


#: The natural ids themselves, for publishers made without a deployment (tests, benchmarks).
NATURAL = MessageIds(None)

_memory: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
_memory_lock = threading.Lock()


@contextlib.contextmanager
def _locked(datastore: Any) -> Iterator[Any]:
    with postgres_ddl_lock(datastore), datastore.transaction(commit=True) as cursor:
        yield cursor


#: The secret's table, made by whoever reads it first.
SECRET_DDL = "CREATE TABLE IF NOT EXISTS {} (id INTEGER PRIMARY KEY, secret TEXT NOT NULL)"


def store_transaction(
    recorder: Any,
) -> tuple[contextlib.AbstractContextManager[Any], str, str] | None:
    """A write transaction on the database of ``recorder`` (an eventsourcing application
    recorder) for Baton's own small tables there: the transaction, the prefix that qualifies a
    table's name (the schema on PostgreSQL) and the parameter mark; None for an in-memory store.
    Safe when several instances create such tables at once."""
    if isinstance(recorder, PostgresRecorder):
        datastore = recorder.datastore
        # Instances creating the table at once would race in the catalogue: the schema lock.
        return _locked(datastore), f'"{datastore.schema}".', "%s"
    if isinstance(recorder, SQLiteRecorder):
        # The write lock first: the service commits to this file meanwhile, and a deferred
        # transaction that looked at the schema could not write after such a commit.
        return sqlite_write(recorder.datastore), "", "?"
    return None


def deployment_secret(recorder: Any) -> bytes:
    """The deployment's secret, kept in the database of ``recorder`` (an eventsourcing
    application recorder); made on first use. Safe when several instances start at once (on
    PostgreSQL under the schema lock; the first insert wins, every instance reads the row
    back). An in-memory store keeps it for the life of the recorder."""
    found = store_transaction(recorder)
    if found is None:
        with _memory_lock:
            return _memory.setdefault(recorder, secrets.token_bytes(32))
    transaction, prefix, mark = found
    table = prefix + SECRET_TABLE
    with transaction as cursor:
        cursor.execute(SECRET_DDL.format(table))
        # The first insert wins; every instance reads the row back.
        cursor.execute(
            f"INSERT INTO {table} (id, secret) VALUES (1, {mark}) ON CONFLICT (id) DO NOTHING",
            (secrets.token_hex(32),),
        )
        cursor.execute(f"SELECT secret FROM {table} WHERE id = 1")
        row: Any = cursor.fetchone()
    value = row["secret"] if hasattr(row, "keys") else row[0]
    return bytes.fromhex(str(value))


__all__ = [
    "MAC_HEX",
    "NATURAL",
    "SECRET_DDL",
    "SECRET_TABLE",
    "MessageIds",
    "deployment_secret",
    "store_transaction",
]
