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

    durable+redis://[USER:PASSWORD@]REDIS_ADDRESS[:PORT][/VIRTUALHOST]
    durable+rediss://...

or ``broker_transport = "celery_durable.transport:Transport"`` with a plain
``redis://`` URL.

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

from typing import Any

from kombu.transport import base
from kombu.transport import pyamqp as kombu_pyamqp
from kombu.transport import redis as kombu_redis

from ..exceptions import ConfigError
from .options import split_options

__all__ = ["Transport"]

_INNER = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "amqp",
    "pyamqp": "amqp",
    "amqps": "amqp",
}  # fmt: skip  (durable+amqp: h8)


def _inner_url(client: Any) -> str:
    hostname = client.hostname or "localhost"
    if "://" in hostname:
        return str(hostname)
    port = client.port or kombu_redis.DEFAULT_PORT
    vhost = client.virtual_host or "0"
    auth = f":{client.password}@" if client.password else ""
    return f"redis://{auth}{hostname}:{port}/{vhost.strip('/') or '0'}"


class Transport(base.Transport):
    """Entry point registered as the ``durable`` alias: picks the wrapper for the inner URL.

    Kombu reads error classes from this class (``Connection.connection_errors``),
    so they are the inner transports'; instances are the inner-specific
    subclasses (``DurableRedisTransport``).
    """

    can_parse_url = True
    default_port = kombu_redis.DEFAULT_PORT  # type: ignore[assignment]
    driver_type = "redis"
    driver_name = "redis"
    # -- durable+amqp (h8): Kombu reads error classes from this alias class, for
    # every inner broker; until each scheme resolves to its own class, they are
    # the union of the redis and py-amqp transports'.
    connection_errors = (
        kombu_redis.Transport.connection_errors + kombu_pyamqp.Transport.connection_errors
    )
    channel_errors = kombu_redis.Transport.channel_errors + kombu_pyamqp.Transport.channel_errors

    def __new__(cls, client: Any, **kwargs: Any) -> Any:
        url = _inner_url(client)
        scheme = url.split("://", 1)[0]
        if _INNER.get(scheme) not in ("redis", "amqp"):
            raise ConfigError(
                f"durable transport: unsupported inner broker {scheme!r} in {scheme}://...; "
                "supported: durable+redis://, durable+rediss://, durable+amqp://, "
                "durable+pyamqp://, durable+amqps://"
            )
        options, inner_options = split_options(client.transport_options)
        if _INNER[scheme] == "amqp":  # durable+amqp (h8)
            from .amqp import DurableAmqpTransport

            return DurableAmqpTransport(
                client, inner_url=url, options=options, inner_options=inner_options, **kwargs
            )
        # -- end durable+amqp
        from .redis import DurableRedisTransport

        return DurableRedisTransport(
            client, inner_url=url, options=options, inner_options=inner_options, **kwargs
        )


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
