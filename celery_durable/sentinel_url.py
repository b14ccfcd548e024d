"""``redis+sentinel://`` URLs: a redis client for whichever master the Sentinels name.

For the shared dump store (``durable_dlq_url``) and its restore lock when the
fleet's redis runs under Redis Sentinel::

    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...][/DB]?master_name=NAME

One ``HOST:PORT`` per Sentinel (port 26379 by default), comma separated.
``USER``/``PASSWORD`` are the master's; ``sentinel_password=`` (query) is the
Sentinels' own.  Every new connection asks the Sentinels for the current master
(redis-py's ``SentinelConnectionPool``), so commands after a failover go to the
new master; a Sentinel that does not answer is skipped, and none answering
raises ``redis.sentinel.MasterNotFoundError`` (a ``redis.ConnectionError``),
which the store and the lock report like any other redis error.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from .exceptions import ConfigError

__all__ = ["SCHEME", "display_url", "is_sentinel_url", "redis_client"]

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme.lower() == SCHEME


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """``redis.Redis.from_url(url, **kwargs)``, ``redis+sentinel://`` URLs included."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **kwargs)
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    master_name = query.pop("master_name", "")
    if not master_name:
        raise ConfigError(f"{_masked(url)}: a redis+sentinel:// URL needs ?master_name=NAME")
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if "sentinel_password" in query:
        sentinel_kwargs["password"] = query.pop("sentinel_password")
    if query:
        raise ConfigError(f"{_masked(url)}: unknown query keys {sorted(query)}")
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
        if not host or (port and not port.isdigit()):
            raise ConfigError(f"{_masked(url)}: bad Sentinel address {item!r}")
        sentinels.append((host, int(port or DEFAULT_PORT)))
    db = parts.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError(f"{_masked(url)}: the redis database must be a number, got {db!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **kwargs)
    return manager.master_for(master_name, db=int(db), username=username, password=password)


def display_url(url: str) -> str:
    """``url`` without its password, for messages (Kombu's sanitizer rejects host lists)."""
    if is_sentinel_url(url):
        return _masked(url)
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def _masked(url: str) -> str:
    url = re.sub(r"(sentinel_password=)[^&]*", r"\1***", url)
    head, sep, rest = url.partition("://")
    if "@" not in rest.split("/", 1)[0]:
        return url
    return f"{head}{sep}***@{rest.split('@', 1)[1]}"
