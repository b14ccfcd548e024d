"""Forward spilled records to RabbitMQ, a batch at a time, deleting nothing unconfirmed.

The drainer's own py-amqp connection (never a user's), in confirm mode.  For
a batch it replays the declarations the records carry (once per connection, in
order), writes every message (frames built by :mod:`.amqp_frames`, a batch in
one socket write), then waits once for RabbitMQ to confirm them all; only then
does :meth:`forward` return and the drainer delete the records.  A
nack, a ``connection.blocked``, a missing confirm or a dead socket raise, and
the whole batch is forwarded again later: a batch interrupted that way may
reach the queues twice (at least once, never lost).

A fresh connection first publishes an unroutable probe and waits for its
confirm (also what :meth:`ping` does): RabbitMQ blocks a connection only when it
publishes during an alarm, so this is how the drainer learns, without sending
a batch into a blocked socket, whether publishes are confirmed again.

A connection idle for longer than its negotiated heartbeat is replaced before
it is used: the drainer sends no heartbeats, so RabbitMQ has closed it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import amqp
from amqp.exceptions import ChannelError

from ..spill import SpillRecord
from .amqp_frames import FrameEncoder, record_message
from .confirms import (
    BoundedChannel,
    BrokerBlocked,
    BrokerOffline,
    Confirms,
    bounded_rpc,
    publish_frame,
)
from .forwarder import UnsendableRecord

__all__ = ["AmqpForwarder", "Sent", "record_message"]

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


@dataclass(frozen=True)
class Sent:
    """Publishes written by :meth:`AmqpForwarder.send`: delivery tags ``first..last``."""

    confirms: Confirms
    first: int
    last: int


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
        self._encoder: FrameEncoder | None = None
        self._last_io = 0.0  # monotonic time of the last confirmed exchange with RabbitMQ
        self._declared: set[str] = set()
        self._refused: set[str] = set()  # declarations RabbitMQ refused: not replayed again

    # -- connection ---------------------------------------------------------------
    def _replace_if_idle(self) -> None:
        conn = self._conn
        if (
            conn is not None
            and self._channel is not None
            and conn.heartbeat
            and time.monotonic() - self._last_io > conn.heartbeat
        ):
            # Nobody sends heartbeats on this connection (the drainer only
            # writes when it has work): after two missed ones RabbitMQ closed
            # it, and a batch written to it now would fail and open the
            # breaker for nothing.  A connection idle that long is replaced.
            logger.debug("celery-durable: replacing the drainer's idle amqp connection")
            self.reset()

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
            self._encoder = FrameEncoder(channel.channel_id, conn.frame_max)
            self._last_io = time.monotonic()
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
        self._encoder = None
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # a dead connection may fail to tear down
                logger.debug("closing a failed drainer connection", exc_info=True)

    def ping(self) -> None:
        """Raise unless RabbitMQ confirms publishes now (connecting if needed)."""
        self._replace_if_idle()
        fresh = self._channel is None
        channel, confirms = self._connect()  # a fresh connection probes as it connects
        if not fresh:
            self._probe(channel, confirms)
            self._last_io = time.monotonic()

    # -- forwarding -------------------------------------------------------------------
    def forward(self, records: Sequence[SpillRecord]) -> None:
        """Publish ``records`` in order; return only once RabbitMQ confirmed them all."""
        self.wait(self.send(records))

    def send(self, records: Sequence[SpillRecord]) -> Sent:
        """Write ``records`` (their declarations first), waiting for no confirm.

        Returns what :meth:`wait` needs to wait for their confirms.  The frames
        of many messages are written at once (py-amqp makes a syscall per
        message); RabbitMQ gets the same bytes in the same order.
        """
        self._replace_if_idle()
        channel, confirms = self._connect()
        done: list[dict[str, Any]] | None = None
        for record in records:
            # Neighbours mostly carry equal declarations: compare, not re-key.
            declarations = record.declarations
            if declarations and declarations != done:
                channel = self._declare(channel, declarations)
                done = declarations
        channel, confirms = self._connect()  # a refused declaration closed the channel
        conn = self._conn
        assert conn is not None and self._encoder is not None
        if conn.blocked:
            raise BrokerBlocked("RabbitMQ blocked the drainer's connection (resource alarm)")
        encode = self._encoder.encode
        transport = conn.transport
        first = confirms.next_tag
        parts: list[bytes] = []
        count = size = 0
        with transport.having_timeout(self.timeout):  # a full socket: give up
            for index, record in enumerate(records):
                try:
                    encode(record, parts)
                except Exception as exc:  # pure encoding: nothing of it was written
                    raise UnsendableRecord(index, exc) from exc
                count += 1
                size += len(record.body) + 512
                if size >= _WRITE_CHUNK:
                    self._write(transport, parts, count, confirms)
                    parts, count, size = [], 0, 0
            if parts:
                self._write(transport, parts, count, confirms)
        return Sent(confirms, first, confirms.next_tag - 1)

    def _write(self, transport: Any, parts: list[bytes], count: int, confirms: Confirms) -> None:
        # Delivery tags count what went out: a failure later in the batch
        # leaves them right (and resets the connection anyway).
        transport.write(b"".join(parts))
        confirms.published_many(count)
        assert self._conn is not None
        self._conn.bytes_sent += 1  # py-amqp's heartbeat bookkeeping: we wrote something

    def wait(self, sent: Sent) -> None:
        """Return once RabbitMQ confirmed everything :meth:`send` returned ``sent`` for.

        Raises (a broker error) on a nack, a ``connection.blocked``, no confirm
        within ``publish_timeout`` (at least :data:`BATCH_CONFIRM_TIMEOUT`), or
        when the connection they were written to is gone.
        """
        if sent.confirms is not self._confirms:
            raise BrokerOffline("the connection these publishes were written to is gone")
        if sent.last < sent.first:
            return
        deadline = time.monotonic() + max(self.timeout, BATCH_CONFIRM_TIMEOUT)
        sent.confirms.wait(sent.first, sent.last, deadline)
        self._last_io = time.monotonic()

    def _declare(self, channel: Any, declarations: list[dict[str, Any]]) -> Any:
        """Replay what this connection has not declared yet; return the channel (maybe new)."""
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
        return channel

    def close(self) -> None:
        self.reset()


def bounded_rpc_channel(conn: amqp.Connection, timeout: float) -> Any:
    """Open a channel on ``conn``, waiting at most ``timeout`` for ``channel.open-ok``."""
    channel = BoundedChannel(conn)
    bounded_rpc(channel, timeout, channel.open)
    return channel
