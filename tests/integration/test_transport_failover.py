"""Failover URLs (``durable+redis://a;durable+redis://b``) with real redis-servers.

The first URL's server is down (its port closed); the second is a live
redis-server.  Kombu moves to an alternate with ``Connection.switch()``, which
resolves the alternate's raw scheme (``durable+redis``) as a transport name,
and only when connecting raises; a durable connection connects to a dead
broker on purpose (producers spill), so with failover URLs it must refuse one.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import kombu
import pytest
from celery import Celery

import celery_durable  # noqa: F401 - registers the durable aliases
from celery_durable.transport.redis import DurableRedisTransport
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for
from tests.integration.conftest import Cluster

QUEUE = kombu.Queue("failover", routing_key="failover")


@pytest.fixture
def dead() -> Iterator[RedisServer]:
    """A redis-server that is not running (its port is closed)."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def live(redis_server: RedisServer) -> Iterator[RedisServer]:
    yield redis_server
    shutdown_all(1.0)


def durable(server: RedisServer) -> str:
    return f"durable+redis://127.0.0.1:{server.port}/0"


def consume(url: str, count: int) -> list[int]:
    received: list[int] = []
    def on_message(body: int, message: kombu.Message) -> None:
        received.append(body)
        message.ack()

    with kombu.Connection(url) as conn, kombu.Consumer(conn, [QUEUE], accept=["json"]) as consumer:
        consumer.register_callback(on_message)
        deadline = time.monotonic() + 30
        while len(received) < count and time.monotonic() < deadline:
            with contextlib.suppress(socket.timeout):
                conn.drain_events(timeout=1)
    return received


def test_connect_fails_over_to_the_live_url_publishes_and_consumes_there(
    dead: RedisServer, live: RedisServer
) -> None:
    url = f"{durable(dead)};{durable(live)}"
    conn = kombu.Connection(url)
    assert conn.connect()
    assert (conn.transport_cls, conn.port) == ("durable+redis", live.port)
    assert type(conn.transport) is DurableRedisTransport
    with conn.channel() as channel:
        producer = kombu.Producer(channel, serializer="json")
        for seq in range(100):
            producer.publish(seq, routing_key=QUEUE.routing_key, declare=[QUEUE])
    conn.release()
    assert live.client().llen("failover") == 100  # at the broker, not in a spill store
    assert consume(url, 100) == list(range(100))


def test_switch_and_ensure_connection_resolve_the_alternate(
    dead: RedisServer, live: RedisServer
) -> None:
    # Before: KeyError: 'No such transport: durable+redis'.
    conn = kombu.Connection(durable(dead), alternates=[durable(live)])
    conn.switch(durable(live))
    assert type(conn.transport) is DurableRedisTransport
    assert conn.info()["port"] == live.port
    conn.switch(durable(dead))
    conn.ensure_connection(max_retries=2)
    assert conn.info()["port"] == live.port
    kombu.Producer(conn.default_channel, serializer="json").publish(
        7, routing_key=QUEUE.routing_key, declare=[QUEUE]
    )
    conn.release()
    assert consume(durable(live), 1) == [7]


def test_every_url_down_spills_at_once_and_drains_when_one_is_back(
    dead: RedisServer, live: RedisServer
) -> None:
    live.stop()
    url = f"{durable(dead)};{durable(live)}"
    started = time.monotonic()
    with kombu.Connection(url) as conn:
        producer = kombu.Producer(conn, serializer="json")
        for seq in range(20):
            producer.publish(seq, routing_key=QUEUE.routing_key, declare=[QUEUE])
        elapsed = time.monotonic() - started
        # One failed connect per URL, never Kombu's retry sleep (2 s) nor a raise.
        assert elapsed < 2.0, elapsed
        live.start()
        wait_for(lambda: live.client().llen("failover") == 20, timeout=60,
                 message="the backlog to drain to the last failover URL")  # fmt: skip
    assert consume(url, 20) == list(range(20))


def test_celery_worker_and_producer_fail_over(cluster: Cluster, dead: RedisServer) -> None:
    url = f"{durable(dead)};{cluster.broker_url}"
    cluster.worker(DURABLE_BROKER_URL=url)
    app = Celery("failover-client", broker=url, set_as_current=False)
    try:
        for seq in range(50):
            app.send_task("durable_app.record", ("failover", seq))
        arrivals = cluster.wait_arrived({("failover", seq) for seq in range(50)}, timeout=60)
        assert sorted(arrivals) == [("failover", seq) for seq in range(50)]
        assert "is down; trying the next failover URL" in cluster.procs[0].output()
    finally:
        app.close()
        shutdown_all(1.0)
