"""A redis that answers but refuses writes is down: publishes spill, nothing raises.

Two refusals a production master gives: ``NOREPLICAS`` (``min-replicas-to-write``
set and the replicas gone, the guard against losing acknowledged writes in a
failover) and ``READONLY`` (the server was turned into a replica, e.g. by a
failover that redis:// does not follow).  Both are plain redis-py
``ResponseError``\\ s; with plain ``redis://`` each publish raises.  Through
``durable+redis://`` they open the breaker, the messages spill in order, and they
drain once the server takes writes again.  Real redis-server, real refusals.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest
import redis
from kombu import Connection, Queue

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.transport.registry import shutdown_all
from tests.helpers.redis_server import RedisServer, free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

COUNT = 50


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        shutdown_all(0.0)
        server.close()


def _no_replicas(client: redis.Redis) -> Callable[[], None]:
    client.config_set("min-replicas-to-write", 1)
    return lambda: client.config_set("min-replicas-to-write", 0)


def _read_only(client: redis.Redis) -> Callable[[], None]:
    client.replicaof("127.0.0.1", free_port())  # a master that is not there: stays read-only
    return lambda: client.replicaof("no", "one")


def queued(server: RedisServer, queue: str) -> list[int]:
    out = []
    for raw in reversed(server.client().lrange(queue, 0, -1)):
        message = json.loads(raw)
        out.append(json.loads(base64.b64decode(message["body"]))["n"])
    return out


@pytest.mark.parametrize(
    ("refuse", "error", "raised"),
    [
        (_no_replicas, "NOREPLICAS", redis.ResponseError),
        (_read_only, "READONLY", redis.ReadOnlyError),
    ],
)
def test_a_server_refusing_writes_is_an_outage(
    broker: RedisServer,
    refuse: Callable[[redis.Redis], Callable[[], None]],
    error: str,
    raised: type[Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = broker.client()
    queue = Queue("refused", routing_key="refused")
    with Connection(f"durable+redis://127.0.0.1:{broker.port}/0") as conn:
        producer = conn.Producer()
        producer.publish({"n": -1}, routing_key="refused", declare=[queue])  # healthy first
        restore = refuse(admin)
        with pytest.raises(raised):
            admin.lpush("probe", "x")  # the server really refuses
        for n in range(COUNT):
            producer.publish({"n": n}, routing_key="refused", declare=[queue])
        assert queued(broker, "refused") == [-1], "nothing gets in while writes are refused"
        assert error in caplog.text, "the breaker's log line names the refusal"
        restore()
        wait_for(lambda: len(queued(broker, "refused")) == COUNT + 1, timeout=60)
        assert queued(broker, "refused") == list(range(-1, COUNT)), "in order, none lost"
