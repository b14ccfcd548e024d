"""``durable+amqp://`` (and ``durable+pyamqp://``, ``durable+amqps://``): Kombu's py-amqp
transport with durable, confirmed publishing.

Consuming, acking, heartbeats and the event loop are Kombu's and py-amqp's own
(we subclass, so a worker sees ``driver_type == "amqp"``, the same
``implements`` and error classes).  What changes:

* **Accepted means confirmed.**  In ``direct`` mode a publish waits for
  RabbitMQ's publisher confirm of *its* delivery tag for at most
  ``publish_timeout``.  No confirm in time, a nack, a ``connection.blocked`` or a
  dead socket: the message goes to the spill store instead, the breaker opens
  and the connection is given up (Kombu reconnects it on next use).  If RabbitMQ
  did take the message and only the confirm was late, the drainer delivers it
  again: a duplicate (same task id), never a loss.
* **Flow control.**  ``connection.blocked`` (memory or disk alarm) opens the
  breaker: publishes spill without touching the socket until the drainer's
  probe is confirmed again (after ``connection.unblocked``).
* **Never hang on connect.**  Connecting waits at most ``publish_timeout``; while
  RabbitMQ is unreachable (or the breaker is open) the connection is *offline*:
  publishes and declarations work (spill, and are noted), anything a consumer
  needs raises a connection error, so Celery's reconnect loop runs as usual.
* **Declarations** are noted (:mod:`.amqp_declarations`) and carried by spilled
  records; the drainer replays them before the messages.  On a live connection
  they go to RabbitMQ as usual, waiting at most ``publish_timeout`` for the reply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from amqp.protocol import queue_declare_ok_t
from kombu.transport import pyamqp

from ..exceptions import ConfigError
from ..spill import SpillRecord
from . import Transport, failover_next, failover_reached, failover_urls, transport_class
from .amqp_declarations import DeclarationLog, declarations_for
from .amqp_forwarder import AmqpForwarder, record_message
from .confirms import (
    BROKER_DOWN,
    BoundedChannel,
    BrokerBlocked,
    BrokerOffline,
    Confirms,
    bounded_rpc,
    publish_frame,
)
from .naming import broker_dir_name, safe_url
from .options import split_options
from .registry import Spiller
from .url import Address, inner_address, present

__all__ = ["DurableAmqpChannel", "DurableAmqpConnection", "DurableAmqpTransport"]

logger = logging.getLogger(__name__)

#: amqp.Message properties that are record fields of their own.
_OWN_FIELDS = frozenset({"content_type", "content_encoding", "application_headers"})
#: Options Kombu's pyamqp transport passes to py-amqp that we set ourselves.
_OURS = ("confirm_publish", "on_blocked", "on_unblocked")
#: Inner schemes this transport serves.
_SCHEMES = ("amqp", "pyamqp", "amqps")


def _scheme(client: Any) -> str:
    """The inner scheme ``client`` names (before :func:`inner_address` reads the rest)."""
    hostname = str(client.hostname or "")
    if "://" in hostname:
        return hostname.split("://", 1)[0].lower()
    transport = client.transport_cls
    if isinstance(transport, str) and transport.startswith("durable+"):
        return transport[len("durable+") :]
    return "amqps" if client.ssl else "amqp"


class DurableAmqpChannel(pyamqp.Channel, BoundedChannel):
    """A py-amqp channel whose publishes are confirmed or spilled, never lost or hung."""

    connection: DurableAmqpConnection
    _confirms: Confirms | None = None

    # -- life cycle ------------------------------------------------------------------
    def open(self) -> Any:
        if not self.connection.usable:  # offline or given up: a local channel
            self.is_open = True
            return None
        return self._rpc(super().open)

    def close(self, *args: Any, **kwargs: Any) -> Any:
        connection = self.connection
        if connection is None or connection.offline or connection.given_up:
            if connection is not None and connection.channels is not None:
                self.collect()
            return None
        try:
            return self._rpc(super().close, *args, **kwargs)
        except BROKER_DOWN as exc:
            connection.give_up(exc)
            return None

    def _do_revive(self) -> None:
        self._confirms = None  # a reopened channel is no longer in confirm mode
        super()._do_revive()

    def _rpc(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        return bounded_rpc(self, self.connection.durable.options.publish_timeout, method,
                           *args, **kwargs)  # fmt: skip

    def _usable(self) -> bool:
        conn = self.connection
        return conn is not None and not (conn.offline or conn.given_up or conn.blocked)

    def _require_online(self, wait: bool = False) -> None:
        """Consumers need a live broker: raise the way a dead connection would.

        ``wait``: connecting "succeeded" (offline), so Celery's retry interval
        does not apply; wait one breaker backoff (at least 1 s) first, or a
        consumer would reconnect in a tight loop.
        """
        if self._usable():
            return
        if wait and self.connection is not None:
            time.sleep(max(1.0, self.connection.durable.router.breaker.backoff()))
        raise BrokerOffline("durable+amqp: RabbitMQ is unreachable (connection offline)")

    # -- publishing ---------------------------------------------------------------------
    def basic_publish(self, msg: Any, exchange: str = "", routing_key: str = "",
                      mandatory: bool = False, immediate: bool = False,
                      **kwargs: Any) -> Any:  # fmt: skip
        router = self.connection.durable.router
        reason = None
        if router.sends_direct:
            if self._usable():
                try:
                    self._publish_confirmed(msg, exchange, routing_key, mandatory)
                    return None
                except BROKER_DOWN as exc:
                    self.connection.give_up(exc)
            reason = "broker down"
        record = self._record(msg, exchange or "", routing_key or "")
        router.accept(record, reason, self.send_records)
        return None

    def send_records(self, records: Sequence[SpillRecord]) -> None:
        """Publish ``records`` now, each confirmed (raises BROKER_DOWN errors).

        The router uses it only when the store cannot take a record and
        nothing of this process is ahead of it.
        """
        if not self._usable():
            raise BrokerOffline("durable+amqp: RabbitMQ is unreachable (connection offline)")
        try:
            for record in records:
                message = record_message(record)
                self._publish_confirmed(message, record.exchange, record.routing_key, False)
        except BROKER_DOWN as exc:
            self.connection.give_up(exc)
            raise

    def _publish_confirmed(self, msg: Any, exchange: str, routing_key: str,
                           mandatory: bool) -> None:  # fmt: skip
        timeout = self.connection.durable.options.publish_timeout
        deadline = time.monotonic() + timeout
        if self._confirms is None:
            self._confirms = Confirms(self, timeout)
        confirms = self._confirms
        conn = self.connection
        # Notifications already received (connection.blocked) before writing.
        with conn.transport.having_timeout(max(0.001, deadline - time.monotonic())):
            publish_frame(self, msg, exchange, routing_key, mandatory)
        tag = confirms.published()
        confirms.wait(tag, tag, deadline)

    def _record(self, msg: Any, exchange: str, routing_key: str) -> SpillRecord:
        props = msg.properties
        body = msg.body
        if isinstance(body, str):
            body = body.encode(props.get("content_encoding") or "utf-8")
        return SpillRecord(
            body=bytes(body),
            exchange=exchange,
            routing_key=routing_key,
            content_type=props.get("content_type"),
            content_encoding=props.get("content_encoding"),
            headers=dict(props.get("application_headers") or {}),
            properties={k: v for k, v in props.items() if k not in _OWN_FIELDS},
            declarations=self.connection.durable.declarations.for_message(exchange, routing_key),
        )

    # -- declarations: noted always, sent when RabbitMQ is there -----------------------
    def exchange_declare(self, exchange: str, type: str, passive: bool = False,
                         durable: bool = False, auto_delete: bool = True, nowait: bool = False,
                         arguments: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        if not passive:
            self._log.exchange_declare(exchange, type, durable, auto_delete, arguments)
        return self._declare(
            super().exchange_declare, None, passive,
            exchange, type, passive=passive, durable=durable, auto_delete=auto_delete,
            nowait=nowait, arguments=arguments, **kwargs,
        )  # fmt: skip

    def queue_declare(self, queue: str = "", passive: bool = False, durable: bool = False,
                      exclusive: bool = False, auto_delete: bool = True, nowait: bool = False,
                      arguments: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        if not passive:
            self._log.queue_declare(queue, durable, exclusive, auto_delete, arguments)
        ask = passive or not queue or exclusive
        return self._declare(
            super().queue_declare, queue_declare_ok_t(queue, 0, 0), ask,
            queue, passive=passive, durable=durable, exclusive=exclusive,
            auto_delete=auto_delete, nowait=nowait, arguments=arguments, **kwargs,
        )  # fmt: skip

    def queue_bind(self, queue: str, exchange: str = "", routing_key: str = "",
                   nowait: bool = False, arguments: Any = None, **kwargs: Any) -> Any:  # fmt: skip
        self._log.queue_bind(queue, exchange, routing_key, arguments)
        return self._declare(
            super().queue_bind, None, False,
            queue, exchange=exchange, routing_key=routing_key, nowait=nowait,
            arguments=arguments, **kwargs,
        )  # fmt: skip

    @property
    def _log(self) -> DeclarationLog:
        return self.connection.durable.declarations

    def _declare(self, method: Any, offline_reply: Any, ask: bool, *args: Any,
                 **kwargs: Any) -> Any:  # fmt: skip
        """Declare on RabbitMQ if it is there; otherwise it is noted, and that is enough.

        ``ask``: the call needs the broker's answer (a passive declaration asks
        whether it exists and how long it is; a server-named or exclusive queue
        only a live connection can own): without a broker it raises, as it would
        on plain ``amqp://``.
        """
        router = self.connection.durable.router
        if not self._usable() or (router.breaker.is_open and not ask):
            if ask:
                raise BrokerOffline("durable+amqp: RabbitMQ is unreachable (connection offline)")
            return offline_reply
        try:
            return self._rpc(method, *args, **kwargs)
        except BROKER_DOWN as exc:
            self.connection.give_up(exc)
            if ask:
                raise
            return offline_reply

    # -- what consumers do needs a live broker ------------------------------------------
    def basic_consume(self, *args: Any, **kwargs: Any) -> Any:
        self._require_online(wait=True)
        return super().basic_consume(*args, **kwargs)

    def basic_qos(self, *args: Any, **kwargs: Any) -> Any:
        self._require_online(wait=True)
        return super().basic_qos(*args, **kwargs)

    def basic_get(self, *args: Any, **kwargs: Any) -> Any:
        self._require_online()
        return super().basic_get(*args, **kwargs)

    def queue_purge(self, *args: Any, **kwargs: Any) -> Any:
        self._require_online()
        return super().queue_purge(*args, **kwargs)

    def queue_delete(self, *args: Any, **kwargs: Any) -> Any:
        self._require_online()
        return super().queue_delete(*args, **kwargs)

    def exchange_delete(self, *args: Any, **kwargs: Any) -> Any:
        self._require_online()
        return super().exchange_delete(*args, **kwargs)


class DurableAmqpConnection(pyamqp.Connection):
    """py-amqp connection that may be *offline* (RabbitMQ unreachable when it connected)."""

    Channel = DurableAmqpChannel
    durable: DurableAmqpTransport
    offline = False
    given_up = False
    blocked = False

    def __init__(self, durable: DurableAmqpTransport, **kwargs: Any) -> None:
        self.durable = durable
        super().__init__(on_blocked=self._on_blocked_cb, on_unblocked=self._on_unblocked_cb,
                         **kwargs)  # fmt: skip

    def connect(self, callback: Any = None) -> Any:
        router = self.durable.router
        if router.breaker.is_open:
            self.offline = True  # known down: don't pay publish_timeout again
            return None
        try:
            return super().connect(callback)
        except BROKER_DOWN as exc:
            if self._transport is not None:
                self.collect()
            self.channels: dict[int, Any] = {}  # collect() clears it; offline channels need ids
            self.offline = True
            router.trip(exc)
            return None

    def give_up(self, exc: BaseException) -> None:
        """A publish or declaration failed: open the breaker and drop this connection.

        No network I/O (the broker may be frozen): the socket is closed, Kombu
        sees the connection as lost and makes a new one on next use.
        """
        self.durable.router.trip(exc)
        if self.given_up:
            return
        self.given_up = True
        logger.info("celery-durable: giving up an amqp connection: %s: %s",
                    type(exc).__name__, exc)  # fmt: skip
        try:
            # Keep the transport object (py-amqp would reconnect on a missing
            # one); a closed transport reads as "not connected" to Kombu.
            if self._transport is not None:
                self._transport.close()
        except Exception:  # a broken socket may fail to close
            logger.debug("closing a given-up connection", exc_info=True)

    @property
    def usable(self) -> bool:
        return not (self.offline or self.given_up or self.blocked)

    def _on_blocked_cb(self, reason: str) -> None:
        # Runs inside drain_events: only note it; the publish waiting for its
        # confirm sees the flag and gives up (outside py-amqp's frame handling).
        self.blocked = True
        self.durable.router.trip(BrokerBlocked(f"connection.blocked: {reason}"))

    def _on_unblocked_cb(self) -> None:
        self.blocked = False

    def close(self, *args: Any, **kwargs: Any) -> Any:
        if self.offline or self.given_up or self._transport is None:
            if self.channels:
                self.collect()
            return None
        try:
            return super().close(*args, **kwargs)
        except BROKER_DOWN:
            self.collect()
            return None


class DurableAmqpTransport(pyamqp.Transport, Transport):
    """The transport behind ``durable+amqp://``, ``durable+pyamqp://``, ``durable+amqps://``."""

    Connection = DurableAmqpConnection

    def __init__(self, client: Any, **kwargs: Any) -> None:
        address = self.address_of(client)
        failover_urls(client)  # a bad failover URL fails now, not mid-outage
        options, inner_options = split_options(client.transport_options or {})
        present(client, address)
        self.address = address
        self.inner_url = address.url()
        self.options = options
        self._inner_options = {k: v for k, v in inner_options.items() if k not in _OURS}
        self._spiller_key = ("amqp", self.inner_url, options)
        super().__init__(client, **kwargs)
        self.declarations = declarations_for(self.inner_url)

    @classmethod
    def address_of(cls, client: Any) -> Address:
        scheme = _scheme(client)
        default_port = pyamqp.DEFAULT_SSL_PORT if scheme == "amqps" else pyamqp.DEFAULT_PORT
        address = inner_address(client, "amqp", default_port, "/")
        if address.scheme not in _SCHEMES:
            transport_class(address.scheme)  # ConfigError naming the supported ones
            raise ConfigError(f"durable+amqp: cannot connect to {address.scheme}:// URLs")
        # pyamqp:// is amqp:// and amqps:// is amqp with TLS: one name per broker
        # (its spill directory, its Spiller), whichever way it was written.
        tls = address.ssl or address.scheme == "amqps"
        return replace(address, scheme="amqps" if tls else "amqp", ssl=tls)

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        return self.address.as_uri(include_password, mask)

    # -- the spiller --------------------------------------------------------------------
    def _new_spiller(self) -> Spiller:
        forwarder = AmqpForwarder(self.connection_params(), self.options.publish_timeout)
        store_dir = self.options.spill_dir / broker_dir_name(self.inner_url)
        return Spiller.create(
            safe_url(self.inner_url), store_dir, self.options, forwarder, BROKER_DOWN
        )

    def connection_params(self) -> dict[str, Any]:
        """py-amqp ``Connection`` arguments for the inner broker."""
        address = self.address
        client = self.client
        ssl: Any = address.ssl
        hostname = address.hostname
        if hostname == "localhost":
            hostname = "127.0.0.1"
        if isinstance(ssl, dict) and ssl.get("server_hostname", "") is None:
            ssl = {**ssl, "server_hostname": hostname}
        password = address.password or "guest"
        return {
            "host": f"{hostname}:{address.port}",
            "userid": address.userid or "guest",
            "password": password() if callable(password) else password,
            "login_method": getattr(client, "login_method", None) or "PLAIN",
            "virtual_host": address.virtual_host or "/",
            "ssl": ssl,
            "heartbeat": getattr(client, "heartbeat", 0) or 0,
            **self._inner_options,
        }

    # -- connections ----------------------------------------------------------------------
    def establish_connection(self) -> Any:
        params = self.connection_params()
        timeout = self.options.publish_timeout
        given = getattr(self.client, "connect_timeout", None)
        params["connect_timeout"] = min(given, timeout) if given else timeout
        conn = DurableAmqpConnection(self, **params)
        conn.client = self.client
        conn.connect()
        if not conn.offline:
            failover_reached(self.client)
        elif failover_next(self.client, self.inner_url):
            # Failover URLs: let Kombu switch to the next one (ensure_connection
            # does, on a connection error).  Once every URL was found down this
            # round, stay and spill (the connection works offline).
            conn.close()
            raise BrokerOffline(
                f"celery-durable: {self.address.as_uri()} is down; trying the next failover URL"
            )
        return conn

    def verify_connection(self, connection: Any) -> bool:
        if getattr(connection, "channels", None) is None:
            return False  # torn down by py-amqp (connection.close from the broker): a new one
        if getattr(connection, "offline", False) or getattr(connection, "given_up", False):
            # While the breaker is open a new connection would be offline too:
            # keep this one (and Kombu's declared-entity cache) instead of paying
            # a reconnect and re-declarations per publish.  Once the drainer sees
            # RabbitMQ again, Kombu reconnects on next use.
            return self.router.breaker.is_open
        return bool(connection.connected) and not getattr(connection, "blocked", False)

    def close_connection(self, connection: Any) -> None:
        connection.client = None
        connection.close()

    def drain_events(self, connection: Any, **kwargs: Any) -> Any:
        if not getattr(connection, "usable", True):
            self._wait_offline(kwargs.get("timeout"))
        return super().drain_events(connection, **kwargs)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        if not getattr(connection, "usable", True):
            self._wait_offline(None)
        super().register_with_event_loop(connection, loop)

    def heartbeat_check(self, connection: Any, rate: int = 2) -> Any:
        if not getattr(connection, "usable", True):
            return None
        return super().heartbeat_check(connection, rate=rate)

    def _wait_offline(self, timeout: float | None) -> None:
        pause = max(1.0, self.router.breaker.backoff())
        time.sleep(min(pause, timeout) if timeout else pause)
        raise BrokerOffline("durable+amqp: RabbitMQ is unreachable (connection offline)")
