"""``durable+redis://``: Kombu's redis transport with durable publishing.

Consuming, acking, the event loop and every other channel method are Kombu's
own (we subclass, so the worker sees ``driver_type == "redis"`` and the same
``implements``).  What changes:

* ``basic_publish`` asks the process's publish router
  (:mod:`celery_durable.transport.router`) where the message goes: broker now,
  memory buffer or LevelDB, depending on ``publish_mode`` and broker health.
  The router and its drainer thread are created on first use and started on
  the first message that is not sent directly (or by the worker/beat hooks),
  so building a transport starts no thread and creates no directory.
* ``Producer.batch()`` (Kombu >= 5.7) gets a batch that sends one pipeline at
  flush while redis is healthy and one spill write batch when it is not
  (:mod:`celery_durable.transport.batch`).
* Declarations never fail on a dead broker: Kombu records them in its
  in-memory state before touching redis; we swallow the network part, and the
  drainer (or the route guard below) writes it later.
* The connectivity ping in ``Channel.__init__`` cannot fail the channel: a
  producer must get a working channel while the broker is down.
* Route guard: a publish whose exchange routes nowhere although this
  connection bound queues to it means redis lost its binding tables (a restart
  without persistence); the bindings are written again and the route retried,
  instead of Kombu's silent drop.
* The transport rewrites its connection to the inner broker's address
  (Kombu would connect ``durable+redis://h:p/db`` to localhost:6379/0 and
  report the whole URL as the host name; see :mod:`.url`), and the publishing
  socket gets ``publish_timeout`` as its socket and connect timeouts so a
  frozen redis cannot hang a publish.
* With failover URLs, connecting refuses a dead broker until every URL was
  tried, so Kombu's ``ensure_connection`` can switch (see
  :func:`~celery_durable.transport.failover_next`).
"""

from __future__ import annotations

import base64
import logging
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import redis as redis_py
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual.base import queue_declare_ok_t

from ..exceptions import ConfigError
from ..redis_pipeline import can_push, push, push_records
from ..spill import SpillRecord
from . import Transport, failover_next, failover_reached, failover_urls, transport_class
from .batch import DurablePublishBatch, Pending
from .forwarder import Forwarder, prepare_message
from .naming import broker_dir_name, safe_url
from .options import split_options
from .refusals import refusing_connection_class
from .registry import Spiller
from .url import Address, inner_address, present

__all__ = ["BROKER_DOWN", "DurableRedisChannel", "DurableRedisTransport", "GuardedRedisTransport"]

logger = logging.getLogger(__name__)

#: What a dead, frozen or restarting redis raises on an open or new connection.
BROKER_DOWN: tuple[type[BaseException], ...] = (
    OSError,
    redis_py.exceptions.ConnectionError,
    redis_py.exceptions.TimeoutError,
    *kombu_redis.Transport.connection_errors,
    *((kombu_redis.BatchPublishError,) if hasattr(kombu_redis, "BatchPublishError") else ()),
)


#: Message properties Kombu's virtual transport sets while publishing.
_ADDED_BY_KOMBU = frozenset({"delivery_info", "delivery_tag", "body_encoding"})


class GuardedRedisChannel(kombu_redis.Channel):
    """Kombu's redis channel plus the route guard (used by the drainer too).

    A server refusing writes (``NOREPLICAS``, ``READONLY``) is down: see :mod:`.refusals`.
    """

    connection_class = refusing_connection_class(kombu_redis.Channel.connection_class)
    connection_class_ssl = refusing_connection_class(kombu_redis.Channel.connection_class_ssl)

    _publish_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        # Kombu builds a new redis.Redis per publish (and the drainer per
        # batch); building one (its response callback table) costs more than
        # the LPUSH itself.  A client is thread-safe (connections come from
        # the pool), so keep one per pool.
        pool = self.pool
        client = self._publish_client
        if client is None or client.connection_pool is not pool:
            client = self._publish_client = super()._create_client()
        return client

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> Any:
        queues = super()._lookup(exchange, routing_key, default)
        if queues or not exchange:
            return queues
        table = self.state.exchanges.get(exchange, {}).get("table")
        if not table:
            return queues  # nothing was ever bound here: Kombu's behaviour stands
        logger.warning(
            "celery-durable: exchange %r routes nowhere although %d binding(s) were "
            "declared: redis lost its binding tables (restart?); re-binding",
            exchange, len(table),
        )  # fmt: skip
        for meta in table:
            kombu_redis.Channel._queue_bind(self, exchange, *meta)
        return super()._lookup(exchange, routing_key, default)


class GuardedRedisTransport(kombu_redis.Transport):
    """Plain redis transport with the route guard: the drainer's connection."""

    Channel = GuardedRedisChannel


class _PingDeferred:
    """Stands in for ``Channel.client`` during ``__init__``: the ping cannot raise."""

    def __init__(self, channel: DurableRedisChannel) -> None:
        self.channel = channel

    def ping(self) -> bool:
        router = self.channel.connection.router
        if router.breaker.is_open:
            self.channel.offline = True  # known down: don't pay publish_timeout again
            return True
        try:
            self.channel._create_client().ping()
        except BROKER_DOWN as exc:
            self.channel.offline = True
            router.trip(exc)
        return True


class DurableQoS(kombu_redis.QoS):
    """Kombu's redis QoS, closing its loss window when redis dies mid-delivery.

    Kombu takes a message with BRPOP (gone from redis) and only then records
    it in the ``unacked`` hash.  If redis dies in between, plain Kombu loses
    the message: the worker drops undelivered messages on connection loss and
    redis has no copy.  Here the message goes back into line through the spill
    store instead, and the error is raised as before.
    """

    channel: DurableRedisChannel

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)
        except BROKER_DOWN:
            self.channel.respill(message)
            raise


class DurableRedisChannel(GuardedRedisChannel):
    """A redis channel whose publishes never block on, or fail with, a dead broker."""

    QoS = DurableQoS
    connection: DurableRedisTransport
    offline = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.client = _PingDeferred(self)
        try:
            super().__init__(*args, **kwargs)
        finally:
            if isinstance(self.__dict__.get("client"), _PingDeferred):
                del self.client
        self._declarations: dict[str, tuple[int, list[dict[str, Any]]]] = {}

    # -- connection parameters -------------------------------------------------
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        # Host, port, db, credentials and TLS are Kombu's own: the transport
        # rewrote the connection to the inner broker's address (url.present).
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        if not asynchronous:
            # The synchronous pool publishes (LPUSH) and declares; bound it so a
            # frozen redis costs at most publish_timeout.  The async pool (BRPOP
            # in the worker's event loop) keeps the user's settings.
            timeout = self.connection.options.publish_timeout
            topts = self.connection.client.transport_options if self.connection.client else {}
            if "socket_timeout" not in topts:
                params["socket_timeout"] = timeout
            if "socket_connect_timeout" not in topts:
                params["socket_connect_timeout"] = timeout
        return params

    # -- publishing --------------------------------------------------------------
    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if "_publish_batch" in kwargs:  # Kombu's PublishBatch, sending on our behalf
            return super().basic_publish(message, exchange, routing_key, **kwargs)
        router = self.connection.router
        body = message["body"]  # Kombu replaces it (base64) in place before sending
        reason = None
        if router.sends_direct:
            try:
                return super().basic_publish(message, exchange, routing_key, **kwargs)
            except BROKER_DOWN as exc:
                router.trip(exc)
                reason = "broker down"
        router.accept(self._record(message, body, exchange, routing_key), reason, self.send_records)
        return None

    def create_publish_batch(self, max_size: int) -> DurablePublishBatch:
        """The batch ``Producer.batch()`` publishes through (Kombu >= 5.7)."""
        return DurablePublishBatch(self, max_size)

    def publish_many(self, items: list[Pending]) -> None:
        """A flushed batch: one pipeline to redis, or one write batch to the router."""
        router = self.connection.router
        reason = None
        if router.sends_direct:
            try:
                self._send_now([(message, ex, rk) for message, _body, ex, rk in items])
                return
            except BROKER_DOWN as exc:
                router.trip(exc)
                reason = "broker down"
        records = [self._record(message, body, ex, rk) for message, body, ex, rk in items]
        router.accept_batch(records, reason, self.send_records)

    def send_records(self, records: Sequence[SpillRecord]) -> None:
        """Publish ``records`` to redis now, in one pipeline (raises BROKER_DOWN errors)."""
        if can_push(self, {record.exchange for record in records}):
            push_records(self, records)
            return
        self._send_now([(prepare_message(self, r), r.exchange, r.routing_key) for r in records])

    def _send_now(self, items: list[tuple[Any, str, str]]) -> None:
        if can_push(self, {exchange for _, exchange, _ in items}):
            push(self, items)
            return
        if not hasattr(kombu_redis, "PublishBatch"):  # kombu < 5.7: one at a time
            for message, exchange, routing_key in items:
                GuardedRedisChannel.basic_publish(self, message, exchange, routing_key)
            return
        batch = kombu_redis.PublishBatch(self, sys.maxsize)  # topic/fanout: Kombu routes
        try:
            for message, exchange, routing_key in items:
                batch.publish(message, exchange=exchange, routing_key=routing_key)
            batch.flush()
        finally:
            batch.close()

    def _record(self, message: Any, body: Any, exchange: str, routing_key: str) -> SpillRecord:
        # What Kombu adds while routing (also after a failed attempt) is not ours to keep.
        properties = {k: v for k, v in message["properties"].items() if k not in _ADDED_BY_KOMBU}
        return SpillRecord(
            body=body if isinstance(body, bytes) else str(body).encode("utf-8"),
            exchange=exchange or "",
            routing_key=routing_key or "",
            content_type=message.get("content-type"),
            content_encoding=message.get("content-encoding"),
            headers=message.get("headers") or {},
            properties=properties,
            declarations=self._declarations_for(exchange),
        )

    def respill(self, message: Any) -> None:
        """Put a message taken from redis back in line (redis died before Kombu kept a copy)."""
        raw = message._raw if hasattr(message, "_raw") else message
        raw_properties = raw.get("properties") or {}
        properties = {k: v for k, v in raw_properties.items() if k not in _ADDED_BY_KOMBU}
        delivery_info = raw_properties.get("delivery_info") or {}
        body = raw["body"]
        if raw_properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        elif isinstance(body, str):
            body = body.encode("utf-8")
        exchange = delivery_info.get("exchange") or ""
        headers = dict(raw.get("headers") or {})
        headers["redelivered"] = True  # as Kombu marks the messages it restores
        record = SpillRecord(
            body=body,
            exchange=exchange,
            routing_key=delivery_info.get("routing_key") or "",
            content_type=raw.get("content-type"),
            content_encoding=raw.get("content-encoding"),
            headers=headers,
            properties=properties,
            declarations=self._declarations_for(exchange),
        )
        logger.warning(
            "celery-durable: redis died while delivering a message (routing key %r); "
            "it goes back in line through the spill store",
            record.routing_key,
        )
        self.connection.router.spill(record, "redelivery")

    def _declarations_for(self, exchange: str) -> list[dict[str, Any]]:
        """What the drainer must declare before routing to ``exchange`` (cached)."""
        if not exchange:
            return []
        info = self.state.exchanges.get(exchange)
        if info is None:
            return []
        table = info.get("table", [])
        cached = self._declarations.get(exchange)
        if cached is not None and cached[0] == len(table):
            return cached[1]
        decls: list[dict[str, Any]] = [
            {
                "op": "exchange_declare",
                "exchange": exchange,
                "type": info.get("type", "direct"),
                "durable": bool(info.get("durable", False)),
                "auto_delete": bool(info.get("auto_delete", False)),
                "arguments": info.get("arguments") or {},
            }
        ]
        for routing_key, _pattern, queue in table:
            decls.append({"op": "queue_declare", "queue": queue})
            decls.append(
                {"op": "queue_bind", "queue": queue, "exchange": exchange,
                 "routing_key": routing_key}
            )  # fmt: skip
        self._declarations[exchange] = (len(table), decls)
        return decls

    # -- declarations never fail on a dead broker -----------------------------------
    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        if self.connection.router.breaker.is_open:
            return  # known down: the binding is in Kombu's state and in spilled records
        try:
            super()._queue_bind(exchange, routing_key, pattern, queue)
        except BROKER_DOWN as exc:
            # Kombu's in-memory state already has the binding; spilled records
            # carry it and the route guard rewrites it once redis is back.
            self.connection.router.trip(exc)

    def queue_declare(self, queue: str | None = None, passive: bool = False, **kwargs: Any) -> Any:
        if queue and not passive and self.connection.router.breaker.is_open:
            self._new_queue(queue, **kwargs)  # in-memory only for redis
            return queue_declare_ok_t(queue, 0, 0)
        try:
            return super().queue_declare(queue, passive=passive, **kwargs)
        except BROKER_DOWN as exc:
            if passive or not queue:
                raise
            self.connection.router.trip(exc)
            return queue_declare_ok_t(queue, 0, 0)

    # -- consuming needs a live broker --------------------------------------------------
    def basic_consume(self, *args: Any, **kwargs: Any) -> Any:
        self.require_broker()
        return super().basic_consume(*args, **kwargs)

    def require_broker(self) -> None:
        """Raise the inner error now if this channel was opened on a dead broker.

        Consumers need a live broker.  Raising here, where a consumer on
        redis:// would have failed, lets Celery's reconnect loop handle it as
        usual.  Connecting "succeeded" (the channel tolerates a dead broker for
        producers), so Celery's own retry interval does not apply: wait one
        breaker backoff (at least 1 s) first, or the consumer would restart in a
        tight loop.
        """
        if not self.offline:
            return
        try:
            self._create_client().ping()
        except BROKER_DOWN:
            time.sleep(max(1.0, self.connection.router.breaker.backoff()))
            raise
        self.offline = False


class DurableRedisTransport(kombu_redis.Transport, Transport):
    """The transport behind ``durable+redis://`` and ``durable+rediss://``."""

    Channel = DurableRedisChannel
    # Kombu >= 5.7 batches (``implements.batch_publish``, inherited) go through
    # DurableRedisChannel.create_publish_batch: they spill like single publishes.

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        # The worker's consumer registers right after connecting; redis then
        # restores unacked messages over the network: needs a live broker.
        for channel in list(self.channels):
            if isinstance(channel, DurableRedisChannel):
                channel.require_broker()
        super().register_with_event_loop(connection, loop)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        address = self.address_of(client)
        failover_urls(client)  # a bad failover URL fails now, not mid-outage
        options, inner_options = split_options(client.transport_options or {})
        present(client, address)
        self.address = address
        self.inner_url = address.url()
        self.options = options
        self._inner_options = inner_options
        self._spiller_key = ("redis", self.inner_url, options)
        super().__init__(client, **kwargs)

    @classmethod
    def address_of(cls, client: Any) -> Address:
        address = inner_address(client, "redis", kombu_redis.DEFAULT_PORT, "0")
        if address.scheme not in ("redis", "rediss"):
            transport_class(address.scheme)  # ConfigError naming the supported ones
            raise ConfigError(f"durable+redis: cannot connect to {address.scheme}:// URLs")
        vhost = address.virtual_host.strip("/") or "0"
        if not vhost.isdigit():
            raise ConfigError(
                f"broker_url {address.as_uri()!r} is invalid: the redis database "
                f"must be a number >= 0, got {address.virtual_host!r}"
            )
        tls = address.ssl
        if address.scheme == "rediss" and not tls:
            # Kombu's rediss:// falls back to CERT_NONE (with a warning); we keep
            # redis-py's default and verify the certificate unless told otherwise.
            tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        # rediss is redis with TLS: one name per broker, whichever way the TLS
        # options came (URL, broker_use_ssl, or a clone that carries only them).
        scheme = "rediss" if tls else "redis"
        return replace(address, scheme=scheme, virtual_host=str(int(vhost)), ssl=tls)

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        return self.address.as_uri(include_password, mask)

    def establish_connection(self) -> Any:
        connection = super().establish_connection()
        channel = self._avail_channels[-1]
        if not getattr(channel, "offline", False):
            failover_reached(self.client)
        elif failover_next(self.client, self.inner_url):
            # Failover URLs: let Kombu switch to the next one (ensure_connection
            # does, on a connection error).  Once every URL was found down this
            # round, stay and spill (the channel works offline).
            self._avail_channels.remove(channel)
            try:
                channel.close()
            except Exception:  # a dead broker may fail the close
                logger.debug("closing an offline channel", exc_info=True)
            raise redis_py.exceptions.ConnectionError(
                f"celery-durable: {self.address.as_uri()} is down; trying the next failover URL"
            )
        return connection

    def _new_spiller(self) -> Spiller:
        forwarder = Forwarder(
            self.inner_url, self._inner_options, GuardedRedisTransport, self.options.publish_timeout
        )
        store_dir = self.options.spill_dir / broker_dir_name(self.inner_url)
        return Spiller.create(
            safe_url(self.inner_url), store_dir, self.options, forwarder, BROKER_DOWN
        )


def _connect_start_hooks() -> None:
    # A worker or beat started without the ``celery`` command's plugins still
    # imports this module before it is ready: adopt there too.
    try:
        from ..worker import connect_transport_hooks
    except ImportError:  # pragma: no cover - celery is a dependency
        return
    connect_transport_hooks()


_connect_start_hooks()
