"""Forward spilled records to the real broker, in pipelined batches.

This is the broker-specific half of the producer core (the router and drainer
are broker-neutral): a forwarder connects, declares, forwards a batch (returning
only once the broker has all of it) and pings; :meth:`Forwarder.reset` drops the
connection after a failure.  The errors it raises for "broker down" are the
transport's error tuple, given to the router and drainer alongside it.  A
transport whose broker needs more (publisher confirms) subclasses it.

The drainer owns one plain Kombu connection to the inner broker (never the
user's).  For every (re)connection it replays the declarations the records
carry (exchanges, queues, bindings: a restarted broker may have forgotten them
all), then publishes a batch: on redis with default/direct exchanges through
:mod:`celery_durable.redis_pipeline` (Kombu's routing, one pipeline per batch),
otherwise through the inner channel's ``PublishBatch`` where Kombu has it, or
one message at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from kombu import Connection

from ..redis_pipeline import can_push, push_records
from ..spill import SpillRecord

__all__ = ["Forwarder", "ForwardsBatches", "UnsendableRecord", "prepare_message"]

logger = logging.getLogger(__name__)

_DECLARE_OPS = ("exchange_declare", "queue_declare", "queue_bind")


class UnsendableRecord(Exception):
    """``records[index]`` cannot be encoded for this broker: the record's fault, not the broker's.

    Raised by :meth:`ForwardsBatches.forward` before any byte of that record is
    sent (what came before it in the batch may have been: it is sent again).
    The drainer quarantines the record instead of retrying it for ever behind
    an open breaker.  Example: a header value the spill format keeps (a UUID,
    through Kombu's JSON registry) that py-amqp's table encoding refuses.
    """

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"the broker's encoding refuses it: {type(cause).__name__}: {cause}")
        self.index = index
        self.cause = cause


class ForwardsBatches(Protocol):
    """What the drainer needs from a broker (a forwarder per broker kind)."""

    def forward(self, records: Sequence[SpillRecord]) -> None:
        """Publish ``records`` in order; return only once the broker has them all.

        Raises one of the broker errors, or :class:`UnsendableRecord`.
        """

    def ping(self) -> None:
        """Raise one of the broker errors unless the broker answers."""

    def reset(self) -> None:
        """Drop the connection after a failure; the next call reconnects."""

    def close(self) -> None:
        """Release the connection for good."""


class Forwarder:
    """A lazily (re)connected inner connection that forwards batches of records."""

    def __init__(
        self,
        inner_url: str,
        inner_options: dict[str, Any],
        transport_cls: type,
        timeout: float,
    ) -> None:
        self.inner_url = inner_url
        self.inner_options = dict(inner_options)
        self.transport_cls = transport_cls
        self.timeout = timeout
        self._conn: Connection | None = None
        self._channel: Any = None
        self._declared: set[str] = set()

    def _connect(self) -> Any:
        if self._channel is None:
            options = {
                "socket_timeout": self.timeout,
                "socket_connect_timeout": self.timeout,
                **self.inner_options,
            }
            conn = Connection(
                self.inner_url,
                transport=self.transport_cls,
                transport_options=options,
                connect_timeout=self.timeout,
            )
            self._conn = conn
            # One attempt: Connection.channel() alone retries once after a
            # 2 s sleep, and the drainer has its own backoff (publishers
            # waiting for room wait on this attempt).
            conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
            self._channel = conn.channel()  # the redis channel pings the server here
            self._declared = set()
        return self._channel

    def reset(self) -> None:
        """Drop the connection after a failure; the next call reconnects and re-declares."""
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # a dead connection may fail to close
                logger.debug("closing a failed drainer connection", exc_info=True)

    def ping(self) -> None:
        """Raise unless the broker answers (connecting if needed)."""
        channel = self._connect()
        client = getattr(channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()

    def forward(self, records: Sequence[SpillRecord]) -> None:
        """Publish ``records`` in order; return only once the broker has them all."""
        channel = self._connect()
        done: list[dict[str, Any]] | None = None
        for record in records:
            # Neighbours mostly carry equal declarations: compare, not re-key.
            declarations = record.declarations
            if declarations and declarations != done:
                self._declare(channel, declarations)
                done = declarations
        if can_push(channel, {record.exchange for record in records}):
            push_records(channel, records)
            return
        create_batch = getattr(channel, "create_publish_batch", None)
        if create_batch is None:  # kombu < 5.7: one round trip per message
            for record in records:
                message = prepare_message(channel, record)
                channel.basic_publish(message, record.exchange, record.routing_key)
            return
        batch = create_batch(len(records) * 4 + 4)
        try:
            for record in records:
                batch.publish(
                    prepare_message(channel, record),
                    exchange=record.exchange,
                    routing_key=record.routing_key,
                )
            batch.flush()
        finally:
            batch.close()

    def _declare(self, channel: Any, declarations: list[dict[str, Any]]) -> None:
        for decl in declarations:
            key = json.dumps(decl, sort_keys=True, default=str)
            if key in self._declared:
                continue
            kwargs = dict(decl)
            op = kwargs.pop("op", None)
            if op not in _DECLARE_OPS:
                logger.warning("celery-durable: skipping unknown declaration %r", decl)
            else:
                getattr(channel, op)(**kwargs)
            self._declared.add(key)

    def close(self) -> None:
        self.reset()


def prepare_message(channel: Any, record: SpillRecord) -> Any:
    """``record`` as a message prepared by ``channel``, ready for ``basic_publish``."""
    properties = dict(record.properties)
    # A message put back in line after a failed delivery says so, as Kombu's
    # own restores do (Celery shows it as request.delivery_info["redelivered"]).
    properties["delivery_info"] = {"redelivered": True} if record.headers.get("redelivered") else {}
    return channel.prepare_message(
        record.body,
        properties.get("priority"),
        record.content_type,
        record.content_encoding,
        dict(record.headers),
        properties,
    )
