"""Durable transport: publishes never block on, and are never lost to, a dead broker.

Features
========
* Type: wraps a real transport (``durable+redis://``; the inner transport
  does all consuming, acking and event-loop work, and its identity
  (``driver_type``, ``implements``, error classes) is what Celery sees).
* Publishing: straight to the broker while it is healthy; to a local LevelDB
  spill store (one per process) while it is down, slow, or the memory buffer is
  full; a background drainer forwards the backlog in order when it is back.
* Delivery: at least once.  A crash between "broker accepted" and "record
  deleted" replays that record with the same task id.
* Supports Direct, Topic and Fanout exchanges (as the inner redis transport).

Connection String
=================
.. code-block::

    durable+redis://[USER:PASSWORD@]REDIS_ADDRESS[:PORT][/DB]
    durable+rediss://[USER:PASSWORD@]REDIS_ADDRESS[:PORT][/DB][?ssl_cert_reqs=...]
    durable+redis://HOST_A[:PORT][/DB];durable+redis://HOST_B[:PORT][/DB]   (failover)

or ``broker_transport = "celery_durable.transport:Transport"`` with a plain
``redis://`` URL.  Defaults: ``localhost``, port 6379, database 0.  The
connection presents the inner broker: ``Connection.info()`` gives its host,
port and database (as ``redis://`` does), ``transport_cls`` becomes the alias
``durable+redis`` (``durable+rediss``), which ``clone()``, pools, pickling and
failover resolve to the same class, and ``as_uri()`` keeps the ``durable+``
scheme.  ``durable+rediss://`` verifies the server certificate unless
``ssl_cert_reqs`` (URL or ``broker_use_ssl``) says otherwise.  A malformed URL
(port outside 1-65535, a database that is not a number, an unsupported inner
scheme), failover URLs included, is a
:class:`~celery_durable.exceptions.ConfigError` naming ``broker_url``.

Failover URLs: with more than one URL a durable connection refuses a broker
that is down, so Kombu moves to the next one at once; when every URL is down
it stays on the last one tried and publishes spill (and drain to that broker).
A broker that dies under an established connection is an outage, not a
failover: its publishes spill and drain to it when it is back.

Transport Options
=================
Durable options (validated: an unknown ``spill_*``/``drain_*``/``buffer_*``/
``publish_*``/``durable_*`` key raises :class:`~celery_durable.exceptions.ConfigError`
listing the valid names):

* ``publish_mode``: ``direct`` (default), ``buffered`` or ``wal``.
* ``publish_timeout``: seconds before a publish gives up on the broker and
  spills (default 1.0).
* ``spill_dir``: default ``$CELERY_DURABLE_DIR/spill``.
* ``spill_max_bytes``: default 1 GiB; then :class:`~celery_durable.exceptions.SpillFull`.
* ``spill_when_full``: ``raise`` (default) or ``block``.
* ``spill_sync``: ``none`` (default), ``interval`` or ``always``.
* ``spill_sync_interval``: default 0.5 s.
* ``buffer_max_bytes``: default 16 MiB (buffered mode).
* ``drain_batch``: default 500.
* ``drain_rate``: messages/s, default unlimited.
* ``shutdown_timeout``: default 5.0 s.

Every other key goes to the inner transport unchanged (``visibility_timeout``,
``socket_timeout``, ``global_keyprefix``, ...).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from kombu.transport import base
from kombu.transport import pyamqp as kombu_pyamqp
from kombu.transport import redis as kombu_redis
from kombu.utils.imports import symbol_by_name

from .. import TRANSPORTS
from ..exceptions import ConfigError
from .registry import Spiller, get_spiller
from .router import PublishRouter
from .url import PREFIX, check_url, presented_scheme

__all__ = [
    "Transport",
    "failover_next",
    "failover_reached",
    "failover_urls",
    "transport_class",
]

#: Inner scheme of a connection that names no scheme (a bare host name).
DEFAULT_SCHEME = "redis"


def inner_scheme(client: Any) -> str:
    """The inner broker scheme of a connection Kombu hands to the ``durable`` alias."""
    hostname = (client.hostname or "") if client is not None else ""
    if "://" in hostname:
        return str(hostname.split("://", 1)[0]).lower()
    transport = getattr(client, "transport_cls", None)
    if isinstance(transport, str) and transport.startswith(f"{PREFIX}+"):
        return transport[len(PREFIX) + 1 :]
    # A pooled copy (kombu: Connection(**conn._info())) has parsed fields and
    # the alias "durable"; its first URL still names the scheme
    # (durable+sentinel:// would otherwise become durable+redis:// here).
    for url in getattr(client, "alt", None) or ():
        if isinstance(url, str) and url.startswith(f"{PREFIX}+") and "://" in url:
            return str(url[len(PREFIX) + 1 :].split("://", 1)[0]).lower()
        break
    # A clone of a connection whose transport was built after the clone read
    # transport_cls (Kombu's Connection._info): its fields are already the
    # inner ones, and a single URL leaves no alternates to read.
    return presented_scheme(client) or DEFAULT_SCHEME


def transport_class(scheme: str) -> type[Transport]:
    """The durable transport class for inner ``scheme`` (``redis`` -> DurableRedisTransport)."""
    try:
        path = TRANSPORTS[scheme]
    except KeyError:
        supported = ", ".join(f"{PREFIX}+{s}://" for s in TRANSPORTS)
        raise ConfigError(
            f"durable transport: unsupported inner broker {scheme!r} in {scheme}://...; "
            f"supported: {supported}"
        ) from None
    cls: type[Transport] = symbol_by_name(path)
    return cls


def _inner_url(client: Any) -> str:
    """The inner URL (the broker's identity) the transport derives from ``client``.

    Reads the connection only: the CLI uses it to find a broker's stores
    without building a transport.
    """
    failover_urls(client)  # the same checks as building the transport
    return transport_class(inner_scheme(client)).address_of(client).url()


#: Per kombu Connection with failover URLs: the inner URLs found down in this round.
_FAILOVER_ROUND: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def failover_urls(client: Any) -> set[str]:
    """The inner URLs of a connection's ``durable+`` failover URLs (each one checked).

    A malformed or unsupported alternate is a ConfigError now, not a raw
    error from Kombu's ``switch()`` in the middle of an outage.
    """
    from kombu import Connection

    urls = set()
    for alternate in getattr(client, "alt", None) or ():
        if not isinstance(alternate, str) or "://" not in alternate:
            continue
        if not alternate.startswith(f"{PREFIX}+"):
            check_url(alternate)  # someone else's transport: only a parse check
            continue
        one = Connection(alternate)  # no transport is built: Kombu only splits it
        urls.add(transport_class(inner_scheme(one)).address_of(one).url())
    return urls


def failover_next(client: Any, url: str) -> bool:
    """Whether a connection that found ``url`` down should fail over to its next URL.

    A durable transport connects "successfully" to a dead broker (producers
    spill), which would keep Kombu from ever trying the failover URLs.  With
    failover URLs it refuses a dead broker instead, so Kombu's
    ``ensure_connection`` moves on at once, until this round has tried every
    URL: the last one is kept although it is down too (its channel works
    offline, publishes spill and drain to it), so a full outage costs one
    failed connect per URL and never Kombu's retry sleep.
    """
    urls = failover_urls(client) | {url}
    if len(urls) < 2:
        return False
    tried = _FAILOVER_ROUND.setdefault(client, set())
    # Back at a URL already tried: Kombu's switch() keeps the previous port or
    # database when an alternate omits them, so a URL may not look as written.
    if url in tried or urls <= tried | {url}:
        tried.clear()
        return False
    tried.add(url)
    return True


def failover_reached(client: Any) -> None:
    """A broker answered: the next outage starts a new failover round."""
    _FAILOVER_ROUND.pop(client, None)


class Transport(base.Transport):
    """The ``durable`` alias and the base class of every durable transport.

    Kombu resolves ``durable+redis://...`` to the alias ``durable`` (it splits
    the scheme at ``+``), and ``broker_transport =
    "celery_durable.transport:Transport"`` names this class with a plain
    ``redis://`` URL.  Instantiating it gives the subclass for the inner
    scheme (``Transport(client)`` is a :class:`DurableRedisTransport`, as
    ``pathlib.Path()`` is a ``PosixPath``); that transport then rewrites the
    connection to name its own alias (``durable+redis``), which is what
    ``Connection.transport_cls``, ``clone()``, ``switch()`` and pools resolve
    from then on.

    Kombu reads error classes from the class the alias names before any
    instance exists (``Connection.connection_errors``, Celery's consumer
    before it connects), and ``durable`` names this class whatever the inner
    broker: they are the union of every inner transport's (redis and py-amqp).
    """

    can_parse_url = True  # keep the inner URL whole; the subclass parses it
    default_port = kombu_redis.DEFAULT_PORT  # type: ignore[assignment]
    driver_type = "redis"
    driver_name = "redis"
    connection_errors = (
        kombu_redis.Transport.connection_errors + kombu_pyamqp.Transport.connection_errors
    )
    channel_errors = kombu_redis.Transport.channel_errors + kombu_pyamqp.Transport.channel_errors

    def __new__(cls, client: Any = None, **kwargs: Any) -> Any:
        if cls is Transport:
            cls = transport_class(inner_scheme(client))
        return super().__new__(cls)

    #: (kind, inner URL, options): one Spiller per process and key (set by subclasses).
    _spiller_key: tuple[Any, ...]
    _router_cache: tuple[int, PublishRouter] | None = None

    @classmethod
    def address_of(cls, client: Any) -> Any:
        """The inner broker's :class:`~celery_durable.transport.url.Address` for ``client``."""
        raise NotImplementedError

    @property
    def spiller(self) -> Spiller:
        """This process's Spiller (a forked child gets its own, never its parent's).

        Created on first use, without side effects: its drainer starts (and
        adopts dead processes' stores) on the first message that is not sent
        directly, or on ``spiller.start()`` (worker and beat hooks).
        """
        return get_spiller(self._spiller_key, self._new_spiller)

    @property
    def router(self) -> PublishRouter:
        """This process's publish router for this broker (cached: it is on every publish)."""
        pid = os.getpid()
        cached = self._router_cache
        if cached is not None and cached[0] == pid and not cached[1].closed:
            return cached[1]
        router = self.spiller.router
        self._router_cache = (pid, router)
        return router

    def _new_spiller(self) -> Spiller:
        """Build this broker's Spiller (its forwarder and store directory)."""
        raise NotImplementedError


def _connect_celery_shutdown() -> None:
    # Flush buffers at worker shutdown and in each prefork child (billiard
    # children leave with os._exit, so atexit alone would not run there).
    try:
        from celery import signals
    except ImportError:  # pragma: no cover - celery is a dependency
        return
    from .spiller import shutdown_all

    def _on_shutdown(*args: Any, **kwargs: Any) -> None:
        shutdown_all()

    signals.worker_shutdown.connect(_on_shutdown, weak=False)
    signals.worker_process_shutdown.connect(_on_shutdown, weak=False)


_connect_celery_shutdown()
