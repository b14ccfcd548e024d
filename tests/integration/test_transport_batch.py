"""``Producer.batch()`` through durable+redis://: one pipeline, or one spill write batch.

Real redis-server, killed with SIGKILL between a batch's first publish and its
flush; every message is counted on the broker once it is back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Producer, Queue

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.transport.registry import shutdown_all, spillers
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not hasattr(Producer, "batch"), reason="Producer.batch is Kombu >= 5.7"),
]


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer(persistent=True).start()  # a SIGKILL loses nothing it acknowledged
    try:
        yield server
    finally:
        shutdown_all(0.0)
        server.close()


def url(server: RedisServer) -> str:
    return f"durable+redis://127.0.0.1:{server.port}/0"


def queued(server: RedisServer, queue: str = "q") -> list[int]:
    """The ``n`` of every message in ``queue``, in the order consumers will get them."""
    out = []
    for raw in reversed(server.client().lrange(queue, 0, -1)):
        message = json.loads(raw)
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        out.append(json.loads(body)["n"])
    return out


def lpush_calls(server: RedisServer) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get("cmdstat_lpush", {}).get("calls", 0))


def test_a_healthy_batch_is_one_pipeline(broker: RedisServer) -> None:
    with Connection(url(broker)) as conn:
        producer = conn.Producer()
        before = lpush_calls(broker)
        with producer.batch():
            for n in range(200):
                producer.publish({"n": n}, routing_key="q")
        assert queued(broker) == list(range(200))
        assert lpush_calls(broker) == before + 1  # one multi-value LPUSH
        assert not conn.transport.spiller.drainer.started  # nothing spilled, nothing started


def test_redis_killed_between_first_publish_and_flush(broker: RedisServer) -> None:
    # Before: the flush raised BatchPublishError and 0 of 200 arrived.
    with Connection(url(broker)) as conn:
        producer = conn.Producer()
        producer.publish({"n": -1}, routing_key="warm")  # connected, healthy
        with producer.batch():
            producer.publish({"n": 0}, routing_key="q")
            broker.stop()  # SIGKILL
            for n in range(1, 200):
                producer.publish({"n": n}, routing_key="q")
        (spiller,) = spillers()
        assert spiller.backlog() == 200  # one write batch, nothing raised
        broker.start()
        wait_for(lambda: len(queued(broker)) >= 200, timeout=60)
        assert queued(broker) == list(range(200))


def test_a_batch_on_a_dead_broker_spills_and_later_publishes_queue_behind_it(
    broker: RedisServer,
) -> None:
    broker.stop()
    with Connection(url(broker)) as conn:
        producer = conn.Producer()
        with producer.batch():
            for n in range(100):
                producer.publish({"n": n}, routing_key="q")
        for n in range(100, 150):
            producer.publish({"n": n}, routing_key="q")
        (spiller,) = spillers()
        assert spiller.backlog() == 150
        broker.start()
        wait_for(lambda: len(queued(broker)) >= 150, timeout=60)
        assert queued(broker) == list(range(150))


@pytest.mark.parametrize("mode", ["wal", "buffered"])
def test_wal_and_buffered_batches_go_through_the_router(broker: RedisServer, mode: str) -> None:
    with Connection(url(broker), transport_options={"publish_mode": mode}) as conn:
        producer = conn.Producer()
        for n in range(10):
            producer.publish({"n": n}, routing_key="q")
        with producer.batch():
            for n in range(10, 210):
                producer.publish({"n": n}, routing_key="q")
        for n in range(210, 220):
            producer.publish({"n": n}, routing_key="q")
        wait_for(lambda: len(queued(broker)) >= 220, timeout=60)
        assert queued(broker) == list(range(220))


def test_a_batch_to_a_topic_exchange_spills_with_its_bindings(broker: RedisServer) -> None:
    exchange = Exchange("events", type="topic")
    queue = Queue("audit", exchange, routing_key="order.*")
    with Connection(url(broker)) as conn:
        producer = conn.Producer(exchange=exchange)
        queue.declare(channel=producer.channel)
        with producer.batch():
            producer.publish({"n": 0}, routing_key="order.created", declare=[queue])
            broker.stop()
            for n in range(1, 50):
                producer.publish({"n": n}, routing_key="order.created", declare=[queue])
        broker.start()  # persistent: the bindings survived; the drainer re-declares anyway
        wait_for(lambda: len(queued(broker, "audit")) >= 50, timeout=60)
        assert queued(broker, "audit") == list(range(50))


def test_an_exception_in_the_batch_discards_what_was_not_flushed(broker: RedisServer) -> None:
    with Connection(url(broker)) as conn:
        producer = conn.Producer()
        with pytest.raises(ZeroDivisionError), producer.batch():
            producer.publish({"n": 0}, routing_key="q")
            1 / 0  # noqa: B018
        with producer.batch():
            producer.publish({"n": 1}, routing_key="q")
        assert queued(broker) == [1]
