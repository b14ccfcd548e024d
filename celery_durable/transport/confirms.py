"""RabbitMQ publisher confirms, tracked by delivery tag, with a deadline.

py-amqp's own ``basic_publish_confirm`` waits for *any* ``basic.ack`` after a
publish: once one confirm arrives late (after a timeout), every later publish
takes its predecessor's confirm for its own.  Here each publish gets its
delivery tag (RabbitMQ numbers them from 1 per channel after
``confirm.select``) and waits for *that* tag, honouring ``multiple`` acks and
nacks, for at most a deadline; a ``connection.blocked`` notification (memory
or disk alarm) ends the wait at once.
"""

from __future__ import annotations

import time
from typing import Any

import amqp
from amqp import spec
from amqp.exceptions import MessageNacked, RecoverableConnectionError

__all__ = [
    "BROKER_DOWN",
    "BoundedChannel",
    "BrokerBlocked",
    "BrokerOffline",
    "ConfirmTimeout",
    "Confirms",
    "bounded_rpc",
    "publish_frame",
]


class BrokerOffline(RecoverableConnectionError):
    """The durable connection was opened while RabbitMQ was unreachable (or given up)."""


class BrokerBlocked(RecoverableConnectionError):
    """RabbitMQ sent ``connection.blocked`` (a memory or disk alarm): publishes would hang."""


class ConfirmTimeout(RecoverableConnectionError):
    """RabbitMQ did not confirm a publish in time (frozen, overloaded, or blocked)."""


#: What a dead, frozen, blocked or refusing RabbitMQ raises on a publishing connection.
BROKER_DOWN: tuple[type[BaseException], ...] = (
    OSError,  # socket errors, socket.timeout
    AttributeError,  # py-amqp on a connection torn down under it (kombu says so too)
    MessageNacked,
    *amqp.Connection.connection_errors,
    *amqp.Connection.recoverable_connection_errors,
)


class Confirms:
    """Confirm mode on one py-amqp channel: which delivery tags are still unconfirmed."""

    def __init__(self, channel: Any, timeout: float) -> None:
        self.channel = channel
        self.next_tag = 1
        self.pending: set[int] = set()
        self.nacked: set[int] = set()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        bounded_rpc(channel, timeout, channel.confirm_select)

    def published(self) -> int:
        """Note one more publish on the channel; return its delivery tag."""
        tag = self.next_tag
        self.next_tag += 1
        self.pending.add(tag)
        return tag

    def published_many(self, n: int) -> None:
        """Note ``n`` more publishes on the channel (tags ``next_tag .. next_tag + n - 1``)."""
        self.pending.update(range(self.next_tag, self.next_tag + n))
        self.next_tag += n

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.pending = {t for t in self.pending if t > tag}
        else:
            self.pending.discard(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self.nacked |= {t for t in self.pending if t <= tag}
        elif tag in self.pending:
            self.nacked.add(tag)
        self._on_ack(tag, multiple)

    def wait(self, first: int, last: int, deadline: float) -> None:
        """Return once tags ``first..last`` are all acked; raise on nack, block or deadline."""
        connection = self.channel.connection
        while self.pending and min(self.pending) <= last:
            if getattr(connection, "blocked", False):
                raise BrokerBlocked("RabbitMQ blocked the connection (resource alarm)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConfirmTimeout(f"no publisher confirm in time (delivery tags {first}-{last})")
            try:
                connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue  # the deadline check above raises
        if self.nacked:
            nacked = {t for t in self.nacked if first <= t <= last}
            self.nacked -= nacked
            if nacked:
                raise MessageNacked(f"RabbitMQ nacked {len(nacked)} publish(es)")


def bounded_rpc(channel: Any, timeout: float, method: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a synchronous channel method, waiting at most ``timeout`` for the reply.

    py-amqp waits for replies (``declare-ok``, ``select-ok``, ...) without a
    timeout; a frozen broker would hang the caller forever.
    """
    previous = getattr(channel, "rpc_timeout", None)
    channel.rpc_timeout = timeout
    try:
        return method(*args, **kwargs)
    finally:
        channel.rpc_timeout = previous


class BoundedChannel(amqp.Channel):
    """A py-amqp channel whose replies are awaited for at most ``rpc_timeout`` (when set)."""

    rpc_timeout: float | None = None

    def wait(self, method: Any, callback: Any = None, timeout: float | None = None,
             returns_tuple: bool = False) -> Any:  # fmt: skip
        if timeout is None and self.rpc_timeout is not None:
            timeout = self.rpc_timeout
        return super().wait(method, callback=callback, timeout=timeout, returns_tuple=returns_tuple)


def publish_frame(channel: Any, message: Any, exchange: str, routing_key: str,
                  mandatory: bool = False) -> None:  # fmt: skip
    """Write one ``basic.publish`` (no confirm wait, no per-message ``drain_events``).

    py-amqp's ``_basic_publish`` reads pending frames before each publish when
    the server supports ``connection.blocked``; batching avoids that syscall per
    message and reads once, while waiting for the confirms.
    """
    channel.send_method(
        spec.Basic.Publish, "Bssbb", (0, exchange, routing_key, mandatory, False), message
    )
