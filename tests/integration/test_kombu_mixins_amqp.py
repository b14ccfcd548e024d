"""Kombu's own integration mixins, run through ``durable+pyamqp://`` on a real RabbitMQ node.

The mixins are the vendored ``kombu_mixins/common.py`` (kombu 5.7.0's
``t/integration/common.py``, unchanged), wired as kombu wires them for
``pyamqp://``: ``connection`` and ``invalid_connection`` fixtures, basic
functionality, exchange types, time to live, priority, message and event-loop
tests.  Each test gets a virtual host of its own on one node per module.

Differences, on purpose: kombu's ``test_failed_*`` expect connecting to a dead
broker to raise; a durable connection connects to a dead broker (a producer
must get a channel, its publishes spill) and what raises is consuming, so
:class:`DeadBrokerIsForConsumersOnly` restates them.  ``BaseFailover`` needs
``durable+`` failover URLs (issue 9) and is not wired here.
"""

from __future__ import annotations

from collections.abc import Iterator

import kombu
import pytest

import celery_durable  # noqa: F401 - registers the durable alias
from celery_durable.transport.amqp import DurableAmqpTransport
from celery_durable.transport.registry import shutdown_all
from tests.helpers.rabbitmq_server import RabbitMQServer, available
from tests.helpers.redis_server import free_port
from tests.integration.kombu_mixins.common import (
    BaseEventLoop,
    BaseExchangeTypes,
    BaseMessage,
    BasePriority,
    BaseTimeToLive,
    BasicFunctionality,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="rabbitmq-server not installed (.ci/bootstrap)"),
]


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[RabbitMQServer]:
    server = RabbitMQServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _close_spillers() -> Iterator[None]:
    yield
    shutdown_all(0.0)  # what the dead-broker tests spilled stays in this test's tmp dir


@pytest.fixture
def connection(rabbitmq: RabbitMQServer) -> kombu.Connection:
    # kombu: kombu.Connection(f'pyamqp://{hostname}:{port}')
    vhost = rabbitmq.new_vhost()
    return kombu.Connection(f"durable+pyamqp://guest:guest@127.0.0.1:{rabbitmq.port}/{vhost}")


@pytest.fixture
def invalid_connection() -> kombu.Connection:
    # kombu: kombu.Connection('pyamqp://localhost:12345'), a port nobody listens on.
    return kombu.Connection(f"durable+pyamqp://localhost:{free_port()}")


class DeadBrokerIsForConsumersOnly:
    """Kombu's ``test_failed_*``, restated for a durable connection (see module doc)."""

    @staticmethod
    def _dead_for_consumers_only(conn: kombu.Connection, channel: object) -> None:
        assert channel is not None
        assert type(conn.transport) is DurableAmqpTransport
        queue = kombu.Queue("test", routing_key="test")
        # A producer works: the message goes to the spill store, nothing raises.
        kombu.Producer(conn.default_channel).publish(
            {"hello": "world"}, routing_key="test", declare=[queue]
        )
        assert conn.transport.spiller.backlog() >= 1
        # A consumer gets the inner transport's connection error, as on pyamqp://.
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


class TestDurableAmqpBasicFunctionality(DeadBrokerIsForConsumersOnly, BasicFunctionality):
    pass


class TestDurableAmqpExchangeTypes(BaseExchangeTypes):
    pass


class TestDurableAmqpTimeToLive(BaseTimeToLive):
    pass


class TestDurableAmqpPriority(BasePriority):
    pass


class TestDurableAmqpMessage(BaseMessage):
    pass


class TestDurableAmqpEventLoop(BaseEventLoop):
    pass
