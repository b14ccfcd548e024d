"""``Producer.batch()`` on a durable channel (Kombu >= 5.7): a batch keeps every promise.

Kombu asks the *channel* for ``create_publish_batch`` and routes each publish in
the batch to it; the batch sends at ``flush`` (and every ``max_size`` messages).
Kombu's own redis batch writes to redis after ``basic_publish`` returned, where
nothing could be spilled any more.  This batch holds the prepared messages and
hands them to the channel's ``publish_many`` at flush: one pipeline while the
broker is healthy, one spill store write batch when it is not (also when it
fails during the flush), through the publish router in ``wal`` and ``buffered``
modes, with the order and at-least-once rules of single publishes.

An exception inside the ``with producer.batch():`` block discards what was not
flushed yet (Kombu's contract): nothing of it was accepted.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["BatchingChannel", "DurablePublishBatch"]

#: (prepared message, its body as published, exchange, routing key)
Pending = tuple[dict[str, Any], Any, str, str]


class BatchingChannel(Protocol):
    def publish_many(self, items: list[Pending]) -> None:
        """Publish (or take responsibility for) ``items``, in order."""


class DurablePublishBatch:
    """A producer-scoped publish batch whose flush spills when the broker cannot take it."""

    def __init__(self, channel: BatchingChannel, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._pending: list[Pending] = []
        self._aborted = False
        self._closed = False

    def publish(
        self, message: dict[str, Any], exchange: str | None = None,
        routing_key: str | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        """Add one prepared message; flushes every ``max_size`` messages."""
        self._check_usable()
        # The body is kept as published: sending replaces it in the message.
        self._pending.append((message, message["body"], exchange or "", routing_key or ""))
        if len(self._pending) >= self.max_size:
            self.flush()

    def flush(self) -> None:
        """Send or spill everything added since the last flush (SpillFull: none was taken)."""
        self._check_usable()
        pending, self._pending = self._pending, []
        if pending:
            self.channel.publish_many(pending)

    def discard(self) -> None:
        """Drop what was not flushed (the ``with`` block raised)."""
        self._aborted = True
        self._pending = []

    def close(self) -> None:
        self._closed = True
        self._pending = []

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("durable publish batch is closed")
        if self._aborted:
            raise RuntimeError("durable publish batch is aborted")
