"""What a process declared on RabbitMQ, so spilled messages can carry it.

A message spilled during an outage may reach a broker that never saw its
exchange, queue or binding (a new node, a restarted one without durable
entities, an auto-delete queue that went away).  Every declaration a durable
channel is asked to make is noted here, exactly as given (queue arguments
such as ``x-queue-type: quorum``, ``x-max-priority``, ``x-expires`` and
dead-letter arguments included), and each spilled record carries the ones its
exchange and routing key need; the drainer replays them, in the order they
were made, before the messages.

Not replayed: exclusive and server-named queues (they belong to the
connection that declared them) and the broker's own ``amq.*`` exchanges.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

__all__ = ["DeclarationLog", "declarations_for"]


def _key(decl: dict[str, Any]) -> str:
    return json.dumps(decl, sort_keys=True, default=str)


class DeclarationLog:
    """Declarations seen in this process for one broker, in order, without duplicates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._order: dict[str, dict[str, Any]] = {}  # key -> declaration, insertion order
        self._cache: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._exclusive: set[str] = set()

    def note(self, decl: dict[str, Any]) -> None:
        key = _key(decl)
        if key in self._order:
            return
        with self._lock:
            self._order[key] = decl
            self._cache.clear()

    def exchange_declare(self, exchange: str, type: str, durable: bool, auto_delete: bool,
                         arguments: dict[str, Any] | None) -> None:  # fmt: skip
        if not exchange or exchange.startswith("amq."):
            return
        self.note({"op": "exchange_declare", "exchange": exchange, "type": type,
                   "durable": bool(durable), "auto_delete": bool(auto_delete),
                   "arguments": dict(arguments or {})})  # fmt: skip

    def queue_declare(self, queue: str, durable: bool, exclusive: bool, auto_delete: bool,
                      arguments: dict[str, Any] | None) -> None:  # fmt: skip
        if not queue or exclusive:
            if queue:
                self._exclusive.add(queue)  # nor its bindings
            return
        self.note({"op": "queue_declare", "queue": queue, "durable": bool(durable),
                   "exclusive": False, "auto_delete": bool(auto_delete),
                   "arguments": dict(arguments or {})})  # fmt: skip

    def queue_bind(self, queue: str, exchange: str, routing_key: str,
                   arguments: dict[str, Any] | None) -> None:  # fmt: skip
        if not queue or not exchange or queue in self._exclusive:
            return
        self.note({"op": "queue_bind", "queue": queue, "exchange": exchange,
                   "routing_key": routing_key, "arguments": dict(arguments or {})})  # fmt: skip

    def for_message(self, exchange: str, routing_key: str) -> list[dict[str, Any]]:
        """The declarations a message to (``exchange``, ``routing_key``) needs, in order.

        The exchange, every queue bound to it and those bindings (any binding may
        match a topic, fanout or headers exchange); for the default exchange, the
        queue named by the routing key.
        """
        cache_key = (exchange, routing_key if not exchange else "")
        cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        with self._lock:
            decls = list(self._order.values())
        if exchange:
            bound = {
                d["queue"] for d in decls if d["op"] == "queue_bind" and d["exchange"] == exchange
            }
            wanted = [
                d for d in decls
                if (d["op"] == "exchange_declare" and d["exchange"] == exchange)
                or (d["op"] == "queue_declare" and d["queue"] in bound)
                or (d["op"] == "queue_bind" and d["exchange"] == exchange)
            ]  # fmt: skip
        else:
            wanted = [d for d in decls if d["op"] == "queue_declare" and d["queue"] == routing_key]
        self._cache[cache_key] = wanted
        return wanted


_LOGS: dict[tuple[int, str], DeclarationLog] = {}
_LOGS_LOCK = threading.Lock()


def declarations_for(inner_url: str) -> DeclarationLog:
    """This process's declaration log for a broker (a forked child starts its own)."""
    key = (os.getpid(), inner_url)
    log = _LOGS.get(key)
    if log is None:
        with _LOGS_LOCK:
            log = _LOGS.setdefault(key, DeclarationLog())
    return log
