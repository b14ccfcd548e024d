"""The durable transport without a broker: identity, options, URL parsing, spilling.

A closed loopback port is a real dead broker: nothing here is mocked.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.exceptions import ConfigError, SpillFull
from celery_durable.spill import SpillStore
from celery_durable.transport.options import split_options
from celery_durable.transport.redis import DurableRedisTransport
from celery_durable.transport.spiller import broker_dir_name, shutdown_all, spillers
from tests.helpers.redis_server import free_port


@pytest.fixture(autouse=True)
def _close_spillers() -> object:
    yield
    shutdown_all(0.0)


def dead_url(db: int = 0) -> str:
    return f"durable+redis://127.0.0.1:{free_port()}/{db}"


def test_alias_resolves_to_a_redis_identity() -> None:
    conn = Connection(dead_url())
    transport = conn.transport
    assert isinstance(transport, DurableRedisTransport)
    assert transport.driver_type == "redis" and transport.driver_name == "redis"
    assert transport.implements.asynchronous
    # The alias class serves amqp too (h8): its errors include redis's.
    assert set(kombu_redis.Transport.connection_errors) <= set(conn.connection_errors)
    assert set(kombu_redis.Transport.channel_errors) <= set(conn.channel_errors)


def test_broker_transport_setting_is_equivalent_to_the_url_prefix() -> None:
    port = free_port()
    conn = Connection(f"redis://127.0.0.1:{port}/3", transport="celery_durable.transport:Transport")
    assert isinstance(conn.transport, DurableRedisTransport)
    assert conn.transport.inner_url == f"redis://127.0.0.1:{port}/3"


def test_inner_url_host_port_and_db_are_honoured() -> None:
    # Kombu alone would connect durable+redis://h:p/db to localhost:6379/0.
    port = free_port()
    conn = Connection(f"durable+redis://127.0.0.1:{port}/5")
    channel = conn.channel()
    params = channel._connparams()
    assert (params["host"], params["port"], params["db"]) == ("127.0.0.1", port, 5)
    assert params["socket_timeout"] == 1.0  # publish_timeout bounds a frozen redis


def test_options_split_ours_from_the_inner_transports() -> None:
    ours, inner = split_options(
        {"publish_mode": "wal", "spill_max_bytes": 10, "visibility_timeout": 60}
    )
    assert ours.publish_mode == "wal" and ours.spill_max_bytes == 10
    assert inner == {"visibility_timeout": 60}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"spill_max_byte": 1}, "unknown durable transport option.*spill_max_bytes"),
        ({"publish_mode": "fast"}, "must be one of"),
        ({"drain_batch": "10"}, "expected int"),
    ],
)
def test_bad_options_fail_at_start_up(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Connection(dead_url(), transport_options=options).transport  # noqa: B018


def test_publish_to_a_dead_broker_spills_fast_and_in_order(durable_dir: Path) -> None:
    conn = Connection(dead_url())
    producer = conn.Producer()
    started = time.monotonic()
    for i in range(200):
        producer.publish({"i": i}, routing_key="q")
    assert time.monotonic() - started < 5
    (spiller,) = spillers()
    assert spiller.breaker.is_open and spiller.backlog() == 200
    store = spiller._store
    assert store is not None
    bodies = [record.body for _, record in store.peek(500)]
    assert bodies == [f'{{"i": {i}}}'.encode() for i in range(200)]


def test_spill_full_reaches_the_caller_and_keeps_what_was_accepted() -> None:
    conn = Connection(dead_url(), transport_options={"spill_max_bytes": 20_000})
    producer = conn.Producer()
    accepted = 0
    with pytest.raises(SpillFull, match="spill_max_bytes"):
        for i in range(10_000):
            producer.publish({"i": i, "pad": "x" * 100}, routing_key="q")
            accepted += 1
    (spiller,) = spillers()
    assert 0 < accepted < 10_000 and spiller.backlog() == accepted


def test_a_dead_processes_store_is_adopted(durable_dir: Path) -> None:
    url = dead_url()
    conn = Connection(url)
    conn.Producer().publish({"x": 1}, routing_key="q")
    (spiller,) = spillers()
    path = spiller._store.path  # type: ignore[union-attr]
    # Simulate the owner dying: its LevelDB lock is released, the store stays.
    spiller._stopping.set()
    spiller._store.close()  # type: ignore[union-attr]
    shutdown_all(0.0)
    with SpillStore(path) as store:
        assert len(store) == 1  # still there, and its lock is free
    conn2 = Connection(url)
    assert conn2.transport.spiller.backlog() == 1  # adopted at start-up


def test_broker_dir_name_is_safe_and_distinct() -> None:
    a = broker_dir_name("redis://:secret@host:6379/0")
    b = broker_dir_name("redis://host:6380/0")
    assert "secret" not in a and "/" not in a and a != b
