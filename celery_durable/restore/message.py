"""Rebuild the original Celery message from a dump entry.

A restore republishes the task as it was first sent (Celery message protocol 2):
same task id, the dumped headers with ``x-durable-restores`` incremented and one
entry appended to ``x-durable-restore-history`` (:mod:`celery_durable.dlq.history`), body
``(args, kwargs, embed)``, the original properties, exchange and routing key.
The capture side reads ``x-durable-restores`` back when the task fails again, so
the count survives any number of round trips.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..dlq.base import DumpEntry
from ..dlq.history import append_history

__all__ = ["RESTORES_HEADER", "Republish", "build_message", "target_queue"]

RESTORES_HEADER = "x-durable-restores"

#: Message properties carried over; the rest (body_encoding, delivery_tag,
#: delivery_info) are per-delivery and set again by Kombu.
_KEPT_PROPERTIES = frozenset(
    (
        "correlation_id",
        "reply_to",
        "priority",
        "delivery_mode",
        "expiration",
        "message_id",
        "type",
        "user_id",
        "app_id",
    )
)
_EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass
class Republish:
    """One message ready to publish, and the dump it comes from."""

    entry: DumpEntry
    body: tuple[list[Any], dict[str, Any], dict[str, Any]]
    headers: dict[str, Any]
    properties: dict[str, Any]
    exchange: str
    routing_key: str
    #: The queue it lands in: what rate control measures.
    queue: str

    @property
    def entry_id(self) -> str:
        return self.entry.entry_id

    @property
    def failed_at(self) -> float:
        return self.entry.failed_at


def target_queue(exchange: str, routing_key: str, delivery_info: dict[str, Any], app: Any) -> str:
    """The queue a message published to ``exchange``/``routing_key`` lands in."""
    if delivery_info.get("queue"):
        return str(delivery_info["queue"])
    if not exchange:  # default exchange: the routing key is the queue name
        return routing_key
    if app is not None:
        for queue in app.amqp.queues.values():
            bound = queue.exchange is not None and queue.exchange.name == exchange
            if bound and queue.routing_key == routing_key:
                return str(queue.name)
    return routing_key


def build_message(
    entry: DumpEntry, app: Any = None, trigger: str = "beat", now: float | None = None
) -> Republish:
    """The protocol-2 message for ``entry``, with the restore count incremented.

    ``trigger`` (``beat``, ``cli`` or ``console``) is recorded in the restore history.
    """
    headers = dict(entry.headers)
    headers.setdefault("lang", "py")
    headers["id"] = entry.task_id
    headers["task"] = entry.task_name
    headers[RESTORES_HEADER] = entry.restores + 1
    append_history(headers, entry, trigger, time.time() if now is None else now)
    properties = {
        k: v for k, v in entry.properties.items() if v is not None and k in _KEPT_PROPERTIES
    }
    properties.setdefault("correlation_id", entry.task_id)
    info = entry.delivery_info or {}
    exchange = info.get("exchange") or ""
    routing_key = info.get("routing_key") or ""
    if not exchange and not routing_key:
        routing_key = app.conf.task_default_queue if app is not None else "celery"
    embed = {**_EMPTY_EMBED, **(entry.embed or {})}
    return Republish(
        entry=entry,
        body=(list(entry.args or []), dict(entry.kwargs or {}), embed),
        headers=headers,
        properties=properties,
        exchange=exchange,
        routing_key=routing_key,
        queue=target_queue(exchange, routing_key, info, app),
    )
