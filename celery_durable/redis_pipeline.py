"""Push many prepared Kombu messages to redis in one pipeline, exactly as Kombu would.

Kombu's redis publish builds a new client and does one round trip per message;
its ``PublishBatch`` pipelines the round trips but still walks the generic
publish path per message.  Both the drainer (spilled records) and restore
(dumped tasks) move thousands of messages at once, so they route each message
with the channel's own methods (the virtual channel's in-place augment,
``_lookup``, ``_get_message_priority``, ``_q_for_pri``), serialize it with
Kombu's JSON, and send one multi-value LPUSH per redis list (the same order as
one LPUSH per message: consumers BRPOP from the other end), plus the PEXPIREs
Kombu's ``_put`` adds for queues declared with ``x-expires``.

Only for the default exchange and ``direct`` exchanges on Kombu's redis channel
(or a subclass): :func:`can_push` says when; anything else takes Kombu's path.
``push`` returns only after redis answered every command; any error raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps as json_dumps

__all__ = ["can_push", "push"]


def can_push(channel: Any, exchanges: Iterable[str]) -> bool:
    """True if every exchange is the default one or a direct one on a redis channel."""
    if not isinstance(channel, kombu_redis.Channel):
        return False
    return all(not ex or channel.typeof(ex).type == "direct" for ex in exchanges)


def push(channel: Any, messages: Sequence[tuple[dict[str, Any], str, str]]) -> None:
    """Route and push ``(prepared message, exchange, routing_key)`` tuples in one pipeline."""
    routes: dict[tuple[str, str], list[str]] = {}
    lists: dict[str, list[str]] = {}
    expiring: dict[str, int] = {}
    expires = getattr(channel, "_expires", None) or {}
    for message, exchange, routing_key in messages:
        channel._inplace_augment_message(message, exchange, routing_key)
        key = (exchange, routing_key)
        queues = routes.get(key)
        if queues is None:
            queues = routes[key] = list(channel._lookup(exchange, routing_key))
        priority = channel._get_message_priority(message, reverse=False)
        raw = json_dumps(message)
        for queue in queues:
            lists.setdefault(channel._q_for_pri(queue, priority), []).append(raw)
            if queue in expires:
                expiring[queue] = expires[queue]
    with channel.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
        for name, values in lists.items():
            pipe.lpush(name, *values)
        for queue, ttl in expiring.items():
            for step in channel.priority_steps:
                pipe.pexpire(channel._q_for_pri(queue, step), ttl)
        pipe.execute()
