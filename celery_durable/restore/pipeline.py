"""Publish a chunk of restores: one redis pipeline where provably equivalent, else Kombu's path.

The routing and the pipelined LPUSH are :mod:`celery_durable.redis_pipeline`
(shared with the durable transport's drainer); this module adds the
serialization of restored task bodies, and :func:`publish_batch` for the generic
path every other transport takes (``runner._publish_chunk``).

Why: ``Producer.batch()`` already pipelines the LPUSHes, but each message still
walks Kombu's generic publish path, which caps a restore at ~9,000 msgs/s on a
2-core machine (benchmarks/restore.py).  Here each message is built with the
same channel methods Kombu's own publish uses (``prepare_message``, the virtual
channel's in-place augment, ``_lookup``, ``_q_for_pri``) and serialized with
Kombu's serializer registry, so the wire format is exactly Kombu's, and the whole
chunk goes out in one non-transactional pipeline holding one multi-value LPUSH
per redis list (same order as one LPUSH per message).

Used only where that is provably the same thing: the channel is exactly
Kombu's redis or Sentinel channel, or one of ours (``durable+redis://``,
``durable+sentinel://``: their publishing differs, their LPUSH does not; a
restore that cannot reach redis fails its chunk and retries, it never spills), no
compression, and every message goes to the default exchange or a ``direct`` one
whose queues carry no ``x-expires``.
Anything else (amqp, fanout/topic exchanges, wrapped transports) takes the
generic path: ``Producer.batch()`` where Kombu has it
(5.7+), else one ``Producer.publish`` after another, which is what ``batch()``
itself does on a transport without batch support.  Either way a chunk returns
only after the broker accepted every message of it, in plan order; any error
raises, and the caller keeps the chunk's dumps (messages of it already accepted
are published again by the next run: at least once, same task id).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from kombu.serialization import dumps as serialize
from kombu.transport import redis as kombu_redis

from ..redis_pipeline import push
from ..transport.redis import GuardedRedisChannel
from .envelope import Envelopes
from .message import Republish

__all__ = ["pipeline_publisher", "publish_batch", "push_lists"]

#: Kombu's own redis channels; a subclass of them may change how messages are put.
_PLAIN_REDIS = (kombu_redis.Channel, kombu_redis.SentinelChannel)

_PERSISTENT = 2


class _RedisPipelinePublisher:
    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._envelopes: dict[str, Envelopes | None] = {}

    def usable(self, chunk: Sequence[Republish], compression: Any) -> bool:
        if compression:
            return False
        ch = self.channel
        for m in chunk:
            if m.exchange and ch.typeof(m.exchange).type != "direct":
                return False
        expiring = getattr(ch, "_expires", None) or {}
        return not any(m.queue in expiring for m in chunk)

    def publish(self, chunk: Sequence[Republish], serializer: str) -> None:
        if serializer not in self._envelopes:
            self._envelopes[serializer] = Envelopes.for_channel(self.channel, serializer)
        envelopes = self._envelopes[serializer]
        if envelopes is not None:
            push_lists(self.channel, *envelopes.build(chunk))
            return
        ch = self.channel
        prepared = []
        for m in chunk:
            content_type, content_encoding, payload = serialize(m.body, serializer=serializer)
            properties = dict(m.properties)
            priority = properties.pop("priority", None)
            if not properties.get("delivery_mode"):
                properties["delivery_mode"] = _PERSISTENT
            message = ch.prepare_message(
                payload, priority, content_type, content_encoding, dict(m.headers), properties
            )
            prepared.append((message, m.exchange, m.routing_key))
        push(ch, prepared)


def push_lists(channel: Any, lists: dict[str, list[str]], expiring: dict[str, int]) -> None:
    """One pipeline: one multi-value LPUSH per list, then Kombu's PEXPIREs; waits for redis."""
    with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
        for name, values in lists.items():
            pipe.lpush(name, *values)
        for queue, ttl in expiring.items():
            for step in channel.priority_steps:
                pipe.pexpire(channel._q_for_pri(queue, step), ttl)
        pipe.execute()


def pipeline_publisher(producer: Any) -> _RedisPipelinePublisher | None:
    """A pipelined publisher for ``producer``'s channel, or None to use Kombu's path."""
    channel = producer.channel
    if type(channel) not in _PLAIN_REDIS and not isinstance(channel, GuardedRedisChannel):
        return None
    return _RedisPipelinePublisher(channel)


@contextmanager
def publish_batch(producer: Any, max_size: int) -> Iterator[None]:
    """``producer.batch(max_size)``, or publish each message at once where Kombu has no batch.

    ``Producer.batch()`` is new in Kombu 5.7; before it every publish is immediate,
    which is exactly what ``batch()`` does on a transport that cannot batch.
    """
    batch = getattr(producer, "batch", None)
    with batch(max_size=max_size) if batch is not None else nullcontext():
        yield
