"""``durable+sentinel://`` without a broker: URL forms, the Sentinel set, store identity.

Closed loopback ports are real dead Sentinels: nothing here is mocked.  The
failover itself is tested against real Sentinels in
``tests/integration/test_transport_sentinel.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.exceptions import ConfigError
from celery_durable.transport.appconf import DurableConfig
from celery_durable.transport.options import split_options
from celery_durable.transport.sentinel import (
    DurableSentinelChannel,
    DurableSentinelTransport,
    broker_from_urls,
    spill_identity,
)
from celery_durable.transport.spiller import broker_dir_name, shutdown_all
from tests.helpers.redis_server import free_port

OPTS = {"master_name": "mymaster"}


@pytest.fixture(autouse=True)
def _close_spillers() -> object:
    yield
    shutdown_all(0.0)


def _ports(n: int = 3) -> list[int]:
    return [free_port() for _ in range(n)]


def test_every_url_is_a_sentinel_the_first_included() -> None:
    # Kombu's sentinel channel takes alternates whose scheme is exactly
    # "sentinel": passing durable+sentinel:// through would drop the first one.
    p1, p2, p3 = _ports()
    url = f"durable+sentinel://127.0.0.1:{p1};sentinel://127.0.0.1:{p2};sentinel://127.0.0.1:{p3}/2"
    conn = Connection(url, transport_options=OPTS)
    transport = conn.transport
    assert isinstance(transport, DurableSentinelTransport)
    assert isinstance(transport, kombu_redis.SentinelTransport)
    broker = transport.sentinel_broker
    assert broker.sentinels == (("127.0.0.1", p1), ("127.0.0.1", p2), ("127.0.0.1", p3))
    assert (broker.master_name, broker.db) == ("mymaster", 2)
    # The drainer's URL is one Kombu's own sentinel transport reads the same way.
    assert transport.inner_url == ";".join(f"sentinel://127.0.0.1:{p}/2" for p in (p1, p2, p3))
    plain = Connection(transport.inner_url, transport_options=OPTS)
    assert [u.split("//")[1].split("/")[0] for u in plain.alt] == [
        f"127.0.0.1:{p}" for p in (p1, p2, p3)
    ]


def test_channel_asks_every_sentinel_and_bounds_each_query() -> None:
    p1, p2 = _ports(2)
    conn = Connection(
        f"durable+sentinel://127.0.0.1:{p1};sentinel://127.0.0.1:{p2}/0",
        transport_options={**OPTS, "publish_timeout": 0.3},
    )
    channel = conn.channel()  # all Sentinels down: the channel still opens (producers spill)
    assert isinstance(channel, DurableSentinelChannel)
    assert channel.offline
    assert conn.transport.spiller.breaker.is_open
    pool = channel._sentinel_managed_pool()
    manager = channel._sentinel_manager
    ports = [s.connection_pool.connection_kwargs["port"] for s in manager.sentinels]
    assert ports == [p1, p2]
    assert all(
        s.connection_pool.connection_kwargs["socket_timeout"] == 0.3 for s in manager.sentinels
    )
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 0


def test_sentinel_kwargs_are_passed_with_timeouts_added() -> None:
    (p1,) = _ports(1)
    conn = Connection(
        f"durable+sentinel://127.0.0.1:{p1}/0",
        transport_options={**OPTS, "sentinel_kwargs": {"password": "s3cret"}},
    )
    channel = conn.channel()
    channel._sentinel_managed_pool()
    kwargs = channel._sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert kwargs["password"] == "s3cret"
    assert kwargs["socket_timeout"] == 1.0 and kwargs["socket_connect_timeout"] == 1.0


def test_a_sentinel_set_is_not_failover_urls() -> None:
    # Kombu's Connection.switch() to a sentinel:// alternate would swap the
    # durable transport for Kombu's plain one on the first connection error.
    p1, p2 = _ports(2)
    conn = Connection(
        f"durable+sentinel://127.0.0.1:{p1};sentinel://127.0.0.1:{p2}/0", transport_options=OPTS
    )
    transport = conn.transport
    conn.maybe_switch_next()
    assert conn.transport is transport
    assert len(conn.alt) == 2  # info()/clone() keep every Sentinel
    clone = conn.clone()
    assert isinstance(clone.transport, DurableSentinelTransport)
    assert clone.transport.sentinel_broker == transport.sentinel_broker


def test_missing_master_name_is_a_config_error() -> None:
    (p1,) = _ports(1)
    with pytest.raises(ConfigError, match="master_name"):
        Connection(f"durable+sentinel://127.0.0.1:{p1}/0").transport  # noqa: B018


@pytest.mark.parametrize(
    ("urls", "reason"),
    [
        (["sentinel://h1:26379/0", "sentinel://h2:26379/1"], "different databases"),
        (["sentinel://h1:26379/0", "redis://h2:6379/0"], "sentinel:// URLs only"),
        (["sentinel://h1:26379/zero"], "must be a number"),
        (["sentinel://h1:99999/0"], "bad Sentinel URL"),
    ],
)
def test_malformed_sentinel_urls_are_config_errors(urls: list[str], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        broker_from_urls(urls, OPTS)


def test_database_may_be_given_once_or_on_every_url() -> None:
    assert broker_from_urls(["sentinel://h1", "sentinel://h2/4"], OPTS).db == 4
    assert broker_from_urls(["sentinel://h1/4", "sentinel://h2/4"], OPTS).db == 4
    assert broker_from_urls(["sentinel://h1", "sentinel://h2"], OPTS).db == 0
    assert broker_from_urls(["sentinel://h1"], OPTS).sentinels == (("h1", 26379),)


def test_stores_are_keyed_by_master_name_and_sentinel_set() -> None:
    a = broker_from_urls(["sentinel://h1:1/0", "sentinel://h2:2/0"], OPTS)
    same_set = broker_from_urls(["sentinel://h2:2/0", "durable+sentinel://h1:1/0"], OPTS)
    other_master = broker_from_urls(
        ["sentinel://h1:1/0", "sentinel://h2:2/0"], {"master_name": "b"}
    )
    other_set = broker_from_urls(["sentinel://h1:1/0", "sentinel://h3:3/0"], OPTS)
    other_db = broker_from_urls(["sentinel://h1:1/1", "sentinel://h2:2/1"], OPTS)
    with_password = broker_from_urls(["sentinel://:pw@h1:1/0", "sentinel://h2:2/0"], OPTS)
    assert a.identity == same_set.identity == with_password.identity
    assert len({a.identity, other_master.identity, other_set.identity, other_db.identity}) == 4
    name = broker_dir_name(a.identity)
    assert name.startswith("sentinel-mymaster-") and "pw" not in name
    # The CLI finds the same directory from the connection URL and options.
    assert spill_identity(a.url, OPTS) == a.identity
    assert spill_identity("redis://h:1/0", OPTS) == "redis://h:1/0"
    odd = broker_from_urls(["sentinel://h1:1/0"], {"master_name": "a:b/c d@e"})
    assert broker_dir_name(odd.identity).startswith("sentinel-a_b_c_d_e-")


def test_cli_config_finds_the_transports_store_directory(tmp_path: Path) -> None:
    p1, p2 = _ports(2)
    options = {**OPTS, "spill_dir": str(tmp_path)}
    conn = Connection(
        f"durable+sentinel://127.0.0.1:{p1};sentinel://127.0.0.1:{p2}/0", transport_options=options
    )
    with conn.Producer() as producer:  # every Sentinel down: the message spills
        producer.publish({"n": 1}, routing_key="q")
    ours, inner = split_options(options)
    config = DurableConfig(
        "durable+" + conn.transport.inner_url, conn.transport.inner_url, ours, inner
    )
    assert [p.parent for p in tmp_path.glob("*/*")] == [config.store_dir]


def test_as_uri_names_every_sentinel_and_hides_the_password() -> None:
    p1, p2 = _ports(2)
    conn = Connection(
        f"durable+sentinel://:pw@127.0.0.1:{p1};sentinel://127.0.0.1:{p2}/1", transport_options=OPTS
    )
    uri = conn.as_uri()
    assert uri == f"durable+sentinel://:**@127.0.0.1:{p1}/1;sentinel://:**@127.0.0.1:{p2}/1"
    assert "pw" in conn.transport.as_uri("", include_password=True)
