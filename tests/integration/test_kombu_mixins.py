"""Kombu's own integration tests, run through ``durable+redis://`` on a real redis-server.

The mixins are vendored unchanged (``kombu_mixins/``) and wired the way
kombu's ``t/integration/test_redis.py`` wires them for ``redis://``: the same
fixtures (``connection`` with and without ``global_keyprefix``,
``invalid_connection``, ``redis_client``), the redis priority order and batch
tests.  Each test gets a fresh redis-server on a free port.

One deliberate difference: kombu's four ``test_failed_*`` tests expect
connecting to a dead broker to raise.  A durable connection connects to a dead
broker on purpose (a producer must get a channel, and its publishes spill:
DESIGN, "never raise a broker error to the caller"); what raises is consuming,
as on ``redis://``.  :class:`DeadBrokerIsForConsumersOnly` restates those four
tests for that contract.  ``BaseTimeToLive`` is not wired: kombu does not run it
for redis either (the redis transport has no per-message expiry).
"""

from __future__ import annotations

from collections.abc import Iterator

import kombu
import pytest

import celery_durable  # noqa: F401 - registers the durable aliases
from celery_durable.transport.redis import DurableRedisTransport
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import RedisServer, free_port
from tests.integration.kombu_mixins.common import (
    BaseEventLoop,
    BaseExchangeTypes,
    BaseFailover,
    BaseMessage,
    BasicFunctionality,
)
from tests.integration.kombu_mixins.redis_tests import (
    redis_client,  # noqa: F401 - kombu's fixture, used by the batch tests
    test_RedisPriority,
    test_RedisPublishBatch,
)


@pytest.fixture(autouse=True)
def _close_spillers() -> Iterator[None]:
    yield
    shutdown_all(0.0)  # what the dead-broker tests spilled stays in this test's tmp dir


@pytest.fixture(params=[None, {"global_keyprefix": "_prefixed_"}], ids=["plain", "keyprefix"])
def connection(request: pytest.FixtureRequest, redis_server: RedisServer) -> kombu.Connection:
    # kombu: kombu.Connection(f'redis://{credentials}{hostname}:{port}', ...)
    return kombu.Connection(
        f"durable+redis://127.0.0.1:{redis_server.port}", transport_options=request.param
    )


@pytest.fixture
def invalid_connection() -> kombu.Connection:
    # kombu: kombu.Connection('redis://localhost:12345'), a port nobody listens on.
    return kombu.Connection(f"durable+redis://localhost:{free_port()}")


@pytest.fixture
def failover_connection(redis_server: RedisServer) -> kombu.Connection:
    conn = kombu.Connection(
        f"durable+redis://127.0.0.1:{free_port()};durable+redis://127.0.0.1:{redis_server.port}"
    )
    # BaseFailover reads conn.port before connecting.  Kombu parses no
    # "+"-prefixed URL at construction (sqla+, durable+ alike); the transport
    # does, when it is built.
    assert type(conn.transport) is DurableRedisTransport
    return conn


class DeadBrokerIsForConsumersOnly:
    """Kombu's ``test_failed_*``, restated for a durable connection (see module doc)."""

    @staticmethod
    def _dead_for_consumers_only(conn: kombu.Connection, channel: object) -> None:
        assert channel is not None
        assert type(conn.transport) is DurableRedisTransport
        queue = kombu.Queue("test", routing_key="test")
        # A producer works: the message goes to the spill store, nothing raises.
        kombu.Producer(conn.default_channel).publish(
            {"hello": "world"}, routing_key="test", declare=[queue]
        )
        # A consumer gets the inner transport's connection error, as on redis://.
        with pytest.raises(conn.connection_errors):
            kombu.Consumer(conn, [queue]).consume()
        conn.close()

    def test_failed_connect(self, invalid_connection: kombu.Connection) -> None:
        self._dead_for_consumers_only(invalid_connection, invalid_connection.connect())

    def test_failed_connection(self, invalid_connection: kombu.Connection) -> None:
        self._dead_for_consumers_only(invalid_connection, invalid_connection.connection)

    def test_failed_channel(self, invalid_connection: kombu.Connection) -> None:
        self._dead_for_consumers_only(invalid_connection, invalid_connection.channel())

    def test_failed_default_channel(self, invalid_connection: kombu.Connection) -> None:
        invalid_connection.transport_options = {"max_retries": 1}
        self._dead_for_consumers_only(invalid_connection, invalid_connection.default_channel)


class TestDurableBasicFunctionality(DeadBrokerIsForConsumersOnly, BasicFunctionality):
    pass


class TestDurableExchangeTypes(BaseExchangeTypes):
    pass


class TestDurablePriority(test_RedisPriority):
    pass


class TestDurablePublishBatch(test_RedisPublishBatch):
    pass


class TestDurableMessage(BaseMessage):
    pass


class TestDurableEventLoop(BaseEventLoop):
    pass


class TestDurableFailover(DeadBrokerIsForConsumersOnly, BaseFailover):
    pass
