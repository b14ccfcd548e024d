"""``durable+sentinel://``: Kombu's Redis Sentinel transport with durable publishing.

A failover (master dead, Sentinel promoting a replica) is an outage of a few
seconds with no writable master: exactly what the spill store is for.  The
channel is :class:`~celery_durable.transport.redis.DurableRedisChannel` on top
of Kombu's :class:`~kombu.transport.redis.SentinelChannel` (by inheritance:
``DurableRedisChannel`` is written against Kombu's redis ``Channel`` and acts
as a mixin here), so publishing, declarations, the route guard, the QoS loss
window and the consumer's "needs a live broker" rule are the same code as
``durable+redis://``.  What is Sentinel-specific lives here:

* The Sentinel set comes from every URL of the connection:
  ``durable+sentinel://h1:26379;sentinel://h2:26379/0``.  Kombu's channel only
  collects alternates whose scheme is exactly ``sentinel``, which would drop
  the first (``durable+sentinel``) one; a URL of any other scheme is a
  :class:`~celery_durable.exceptions.ConfigError`, as is a missing
  ``master_name`` or two URLs naming different databases.
* Every new connection asks the Sentinels for the current master (redis-py's
  ``SentinelConnectionPool``); a Sentinel that does not answer is skipped, and
  all of them down (or none knowing a healthy master, mid-failover) raises
  ``MasterNotFoundError``, a ``ConnectionError``: an outage like any other.
  Queries to Sentinels get ``publish_timeout`` as socket timeouts unless
  ``sentinel_kwargs`` sets them, so a black-holed Sentinel cannot hang a publish.
* A Sentinel set is one broker, not failover URLs: the transport turns off
  Kombu's URL cycling on its connection (``Connection.switch()`` to a
  ``sentinel://`` alternate would swap this transport for Kombu's plain one).
* The drainer's connection is a fresh Kombu Sentinel connection after every
  failure, so the backlog goes to the master Sentinel names *now*.
* A master that refuses writes for want of replicas (``NOREPLICAS``, with
  ``min-replicas-to-write``) is down too (:mod:`.refusals`).
* Spill stores are keyed by master name, database and the (sorted) Sentinel
  set, never by a master's address: a store written before a failover is the
  same store after it (:func:`spill_identity`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis as redis_py
from kombu.transport import redis as kombu_redis
from kombu.utils.url import _parse_url
from redis import sentinel as redis_sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..exceptions import ConfigError
from .forwarder import Forwarder
from .naming import broker_dir_name, safe_url
from .options import split_options
from .redis import BROKER_DOWN, DurableRedisChannel, DurableRedisTransport, GuardedRedisChannel
from .refusals import refusing_connection_class
from .spiller import Spiller
from .url import Address

__all__ = [
    "DurableSentinelChannel",
    "DurableSentinelTransport",
    "GuardedSentinelTransport",
    "SentinelBroker",
    "broker_from_urls",
    "sentinel_broker",
    "spill_identity",
]

SCHEME = "sentinel"
DEFAULT_PORT = 26379


@dataclass(frozen=True)
class SentinelBroker:
    """One Sentinel-managed redis: its Sentinels (URL order), master name and database."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int
    username: str | None = None
    password: str | None = None

    @property
    def url(self) -> str:
        """A URL Kombu's own ``sentinel://`` transport reads the same way (the drainer's)."""
        auth = ""
        if self.password:
            auth = f"{self.username or ''}:{self.password}@"
        elif self.username:
            auth = f"{self.username}@"
        return ";".join(
            f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels
        )

    @property
    def identity(self) -> str:
        """The name the spill stores are keyed by: master, database, Sentinel set.

        No master address (it changes at every failover) and no credentials; the
        Sentinel set is sorted, so listing the same Sentinels in another order is
        the same broker.
        """
        hosts = ",".join(f"{host}:{port}" for host, port in sorted(set(self.sentinels)))
        digest = hashlib.sha1(hosts.encode()).hexdigest()[:8]
        # broker_dir_name() shows scheme, "host" (the master name) and database.
        master = quote(self.master_name, safe="")  # any name parses as a host
        return f"sentinel://{master}/{self.db}?sentinels={digest}"


def sentinel_broker(client: Any, inner_options: Mapping[str, Any]) -> SentinelBroker:
    """The Sentinel broker a ``durable+sentinel://`` connection names (ConfigError if wrong)."""
    urls: list[str] = []
    hostname = client.hostname or ""
    if "://" in hostname:
        urls.append(hostname)
    elif hostname:  # fields Kombu parsed already (clone(), switch())
        urls.append(f"sentinel://{hostname}:{client.port or DEFAULT_PORT}")
    urls.extend(url for url in (getattr(client, "alt", None) or ()) if isinstance(url, str))
    return broker_from_urls(urls, inner_options)


def broker_from_urls(urls: Sequence[str], inner_options: Mapping[str, Any]) -> SentinelBroker:
    """The broker that ``sentinel://`` (``durable+sentinel://``) URLs, one per Sentinel, name."""
    sentinels: list[tuple[str, int]] = []
    dbs: set[int] = set()
    username = password = None
    for url in urls:
        inner = url[len("durable+") :] if url.startswith("durable+") else url
        try:
            parts = _parse_url(inner)
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise ConfigError(f"broker_url: bad Sentinel URL {_masked(url)!r}: {exc}") from exc
        if parts.scheme != SCHEME:
            raise ConfigError(
                f"broker_url: durable+sentinel:// takes sentinel:// URLs only (one per "
                f"Sentinel), got {_masked(url)!r}"
            )
        address = (parts.hostname or "localhost", port)
        if address not in sentinels:
            sentinels.append(address)
        path = (parts.path or "").strip("/")
        if path:
            if not path.isdigit():
                raise ConfigError(
                    f"broker_url: the redis database must be a number, got {path!r} in "
                    f"{_masked(url)!r}"
                )
            dbs.add(int(path))
        username = username or parts.username
        password = password or parts.password
    if not sentinels:
        raise ConfigError("broker_url: durable+sentinel:// names no Sentinel")
    if len(dbs) > 1:
        raise ConfigError(
            f"broker_url: the Sentinel URLs name different databases {sorted(dbs)}; "
            "give the database once (or the same on each URL)"
        )
    master_name = inner_options.get("master_name")
    if not master_name or not isinstance(master_name, str):
        raise ConfigError(
            "durable+sentinel:// needs broker_transport_options['master_name'] "
            "(the name the Sentinels monitor the master under)"
        )
    return SentinelBroker(
        sentinels=tuple(sentinels),
        master_name=master_name,
        db=dbs.pop() if dbs else 0,
        username=username,
        password=password,
    )


def spill_identity(inner_url: str, inner_options: Mapping[str, Any]) -> str:
    """What ``broker_dir_name`` names a broker's stores by: the URL, or a Sentinel identity."""
    if not inner_url.startswith(f"{SCHEME}://"):
        return inner_url
    return broker_from_urls(inner_url.split(";"), inner_options).identity


def _sentinel_kwargs(given: Any, params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    # redis-py gives Sentinel connections the master's socket_* settings when
    # sentinel_kwargs is None; keep that, and bound every Sentinel query.
    if given is None:
        kwargs = {k: v for k, v in params.items() if k.startswith("socket_")}
    else:
        kwargs = dict(given)
    for key in ("socket_timeout", "socket_connect_timeout"):
        if kwargs.get(key) is None:
            kwargs[key] = timeout
    if "retry" not in kwargs:
        # redis-py >= 6 retries each Sentinel connection with exponential backoff
        # (~3 s per Sentinel): with every Sentinel down, the first publish took
        # 9-12 s.  One attempt per Sentinel; the breaker and drainer do the retrying.
        kwargs["retry"] = Retry(NoBackoff(), 0)
    return kwargs


def _masked(url: str) -> str:
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{head}://***@{rest.split('@', 1)[1]}"


_MasterConnection: Any = refusing_connection_class(redis_sentinel.SentinelManagedConnection)
# kombu >= 5.5 has a Sentinel SSL connection class
_MasterSSLConnection: Any = refusing_connection_class(
    getattr(kombu_redis, "SentinelManagedSSLConnection", None)
)


class GuardedSentinelChannel(GuardedRedisChannel, kombu_redis.SentinelChannel):
    """Kombu's Sentinel channel plus the route guard (the drainer's)."""

    connection_class = _MasterConnection
    if _MasterSSLConnection is not None:
        connection_class_ssl = _MasterSSLConnection


class GuardedSentinelTransport(kombu_redis.SentinelTransport):
    """Plain Sentinel transport with the route guard: the drainer's connection."""

    Channel = GuardedSentinelChannel


class DurableSentinelChannel(DurableRedisChannel, kombu_redis.SentinelChannel):
    """A Sentinel channel whose publishes never block on, or fail with, a failover."""

    connection: DurableSentinelTransport
    connection_class = _MasterConnection
    if _MasterSSLConnection is not None:
        connection_class_ssl = _MasterSSLConnection
    sentinel_kwargs: Any = None
    min_other_sentinels = 0

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        params = super()._connparams(asynchronous=asynchronous)
        broker = self.connection.sentinel_broker
        params["db"] = broker.db
        if broker.username:
            params["username"] = broker.username
        if broker.password:
            params["password"] = broker.password
        return params

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        # Kombu's version collects Sentinels from ``client.alt`` with scheme
        # ``sentinel`` only (the first, ``durable+sentinel`` URL is lost).
        broker = self.connection.sentinel_broker
        params = self._connparams(asynchronous)
        params.pop("host", None)
        params.pop("port", None)
        manager = redis_sentinel.Sentinel(
            list(broker.sentinels),
            min_other_sentinels=self.min_other_sentinels or 0,
            sentinel_kwargs=_sentinel_kwargs(
                self.sentinel_kwargs, params, self.connection.options.publish_timeout
            ),
            **params,
        )
        # Kept so Kombu's _disconnect_pools closes the Sentinel connections too.
        if asynchronous:
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        master_kwargs = {k: params[k] for k in ("username", "password") if k in params}
        return manager.master_for(
            broker.master_name, redis_py.Redis, **master_kwargs
        ).connection_pool


class DurableSentinelTransport(DurableRedisTransport, kombu_redis.SentinelTransport):
    """The transport behind ``durable+sentinel://``."""

    Channel = DurableSentinelChannel
    default_port = DEFAULT_PORT
    can_parse_url = True  # Connection.as_uri() asks as_uri() below: every Sentinel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        inner_options = split_options(client.transport_options or {})[1]
        self.sentinel_broker = sentinel_broker(client, inner_options)
        # Every connection asks all Sentinels: cycling Kombu's failover URLs
        # would only switch this transport for Kombu's plain one.
        client.cycle = None
        super().__init__(client, **kwargs)
        self.inner_url = self.sentinel_broker.url  # every Sentinel (address_of: the first)

    @classmethod
    def address_of(cls, client: Any) -> Address:
        # failover_urls() calls this for each durable+ URL alone, without options.
        options = {"master_name": "-", **(client.transport_options or {})}
        broker = sentinel_broker(client, split_options(options)[1])
        host, port = broker.sentinels[0]
        return Address(SCHEME, host, port, broker.username, broker.password, str(broker.db))

    def establish_connection(self) -> Any:
        # A Sentinel set is one broker: never a round over "failover URLs".
        return super(DurableRedisTransport, self).establish_connection()

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        """``durable+sentinel://h1:26379/0;sentinel://h2:26379/0...``: every Sentinel."""
        url = "durable+" + self.sentinel_broker.url
        if not include_password and self.sentinel_broker.password:
            url = url.replace(f":{self.sentinel_broker.password}@", f":{mask}@")
        return url

    def _new_spiller(self) -> Spiller:
        broker = self.sentinel_broker
        inner_options = dict(self._inner_options)
        inner_options["sentinel_kwargs"] = _sentinel_kwargs(
            inner_options.get("sentinel_kwargs"), {}, self.options.publish_timeout
        )
        # The drainer reconnects through every Sentinel (broker.url), and the
        # stores are named by master and Sentinel set (broker.identity).
        forwarder = Forwarder(
            broker.url, inner_options, GuardedSentinelTransport, self.options.publish_timeout
        )
        store_dir = self.options.spill_dir / broker_dir_name(broker.identity)
        return Spiller.create(
            safe_url(broker.identity), store_dir, self.options, forwarder, BROKER_DOWN
        )
