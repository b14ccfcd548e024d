"""Forward spilled records to RabbitMQ, a batch at a time, deleting nothing unconfirmed.

The drainer's own py-amqp connection (never a user's), in confirm mode.  For
a batch it replays the declarations the records carry (once per connection, in
order), writes every message, then waits for RabbitMQ to confirm them all;
only then does :meth:`forward` return and the drainer delete the records.  A
nack, a ``connection.blocked``, a missing confirm or a dead socket raise, and
the whole batch is forwarded again later: a batch interrupted that way may
reach the queues twice (at least once, never lost).

A fresh connection first publishes an unroutable probe and waits for its
confirm (also what :meth:`ping` does): RabbitMQ blocks a connection only when it
publishes during an alarm, so this is how the drainer learns, without sending
a batch into a blocked socket, whether publishes are confirmed again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import amqp
from amqp import spec
from amqp.exceptions import ChannelError
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from ..spill import SpillRecord
from .confirms import BoundedChannel, BrokerBlocked, Confirms, bounded_rpc, publish_frame

__all__ = ["AmqpForwarder", "record_message"]

logger = logging.getLogger(__name__)

_DECLARE_OPS = ("exchange_declare", "queue_declare", "queue_bind")
#: Routing key of the probe: published to the default exchange, routed nowhere.
PROBE_ROUTING_KEY = "celery-durable.probe"
#: A batch's confirms may take longer than one publish's (persistent messages are
#: fsynced first); the drainer is not on any caller's path.
BATCH_CONFIRM_TIMEOUT = 30.0


class _Connection(amqp.Connection):
    """py-amqp connection that remembers ``connection.blocked``."""

    Channel = BoundedChannel
    blocked = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(on_blocked=self._blocked, on_unblocked=self._unblocked, **kwargs)

    def _blocked(self, reason: str) -> None:
        self.blocked = True
        logger.warning("celery-durable: RabbitMQ blocked the drainer's connection: %s", reason)

    def _unblocked(self) -> None:
        self.blocked = False


class _Collector:
    """Stands in for py-amqp's socket transport: frames are gathered, then written at once."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: Any) -> None:
        self.parts.append(bytes(data))  # py-amqp hands over a view of a reused buffer
        self.size += len(data)

    def take(self) -> bytes:
        data, self.parts, self.size = b"".join(self.parts), [], 0
        return data


#: Bytes of frames gathered before one socket write.
_WRITE_CHUNK = 256 * 1024


class AmqpForwarder:
    """A lazily (re)connected confirm-mode connection that forwards batches of records."""

    def __init__(self, params: dict[str, Any], timeout: float) -> None:
        self.params = dict(params)
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._channel: Any = None
        self._confirms: Confirms | None = None
        self._declared: set[str] = set()
        self._refused: set[str] = set()  # declarations RabbitMQ refused: not replayed again

    # -- connection ---------------------------------------------------------------
    def _connect(self) -> tuple[Any, Confirms]:
        if self._channel is None or self._confirms is None:
            conn = _Connection(**{**self.params, "connect_timeout": self.timeout})
            self._conn = conn
            try:
                conn.connect()
                channel = bounded_rpc_channel(conn, self.timeout)
                confirms = Confirms(channel, self.timeout)
                self._probe(channel, confirms)
            except BaseException:
                self.reset()
                raise
            self._channel, self._confirms = channel, confirms
            self._declared = set()
        return self._channel, self._confirms

    def _probe(self, channel: Any, confirms: Confirms) -> None:
        """Raise unless RabbitMQ confirms a publish within ``timeout`` (not blocked, not frozen)."""
        publish_frame(channel, amqp.Message(b""), "", PROBE_ROUTING_KEY)
        tag = confirms.published()
        confirms.wait(tag, tag, time.monotonic() + self.timeout)

    def reset(self) -> None:
        """Drop the connection after a failure (no network I/O: the broker may be frozen)."""
        conn, self._conn, self._channel, self._confirms = self._conn, None, None, None
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # a dead connection may fail to tear down
                logger.debug("closing a failed drainer connection", exc_info=True)

    def ping(self) -> None:
        """Raise unless RabbitMQ confirms publishes now (connecting if needed)."""
        fresh = self._channel is None
        channel, confirms = self._connect()  # a fresh connection probes as it connects
        if not fresh:
            self._probe(channel, confirms)

    # -- forwarding -------------------------------------------------------------------
    def forward(self, records: Sequence[SpillRecord]) -> None:
        """Publish ``records`` in order; return only once RabbitMQ confirmed them all."""
        channel, confirms = self._connect()
        for record in records:
            self._declare(channel, record.declarations)
        channel, confirms = self._connect()  # a refused declaration closed the channel
        assert self._conn is not None
        if self._conn.blocked:
            raise BrokerBlocked("RabbitMQ blocked the drainer's connection (resource alarm)")
        # py-amqp writes each message with its own syscall; gather the frames of
        # many messages (same bytes, same order) and write them at once.
        collector = _Collector()
        write_frame = frame_writer(self._conn, collector)
        transport = self._conn.transport
        first = confirms.next_tag
        with transport.having_timeout(self.timeout):  # a full socket: give up
            for record in records:
                args = dumps("Bssbb", (0, record.exchange, record.routing_key, False, False))
                write_frame(1, channel.channel_id, spec.Basic.Publish, args, record_message(record))
                confirms.published()
                if collector.size >= _WRITE_CHUNK:
                    transport.write(collector.take())
            if collector.parts:
                transport.write(collector.take())
        deadline = time.monotonic() + max(self.timeout, BATCH_CONFIRM_TIMEOUT)
        confirms.wait(first, confirms.next_tag - 1, deadline)

    def _declare(self, channel: Any, declarations: list[dict[str, Any]]) -> None:
        for decl in declarations:
            key = json.dumps(decl, sort_keys=True, default=str)
            if key in self._declared or key in self._refused:
                continue
            kwargs = dict(decl)
            op = kwargs.pop("op", None)
            if op not in _DECLARE_OPS:
                logger.warning("celery-durable: skipping unknown declaration %r", decl)
            else:
                try:
                    bounded_rpc(channel, self.timeout, getattr(channel, op), **kwargs)
                except ChannelError as exc:
                    # RabbitMQ refused it (e.g. PRECONDITION_FAILED: the queue exists
                    # with other arguments), as it would have refused the producer's
                    # own declare.  The channel is closed: reconnect, go on without it.
                    logger.error(
                        "celery-durable: RabbitMQ refused a replayed declaration %r: %s",
                        decl, exc,
                    )  # fmt: skip
                    self._refused.add(key)
                    declared = self._declared
                    self.reset()
                    channel, _ = self._connect()
                    self._declared = declared
                    continue
            self._declared.add(key)

    def close(self) -> None:
        self.reset()


def bounded_rpc_channel(conn: amqp.Connection, timeout: float) -> Any:
    """Open a channel on ``conn``, waiting at most ``timeout`` for ``channel.open-ok``."""
    channel = BoundedChannel(conn)
    bounded_rpc(channel, timeout, channel.open)
    return channel


#: Properties that are record fields of their own.
_OWN_FIELDS = ("content_type", "content_encoding", "application_headers")


def record_message(record: SpillRecord) -> amqp.Message:
    """The py-amqp message for a record (body, headers and properties exactly as published)."""
    properties = {k: v for k, v in record.properties.items() if k not in _OWN_FIELDS}
    if record.content_type is not None:
        properties["content_type"] = record.content_type
    if record.content_encoding is not None:
        properties["content_encoding"] = record.content_encoding
    return amqp.Message(record.body, application_headers=dict(record.headers), **properties)
