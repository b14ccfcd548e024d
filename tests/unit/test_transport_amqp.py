"""durable+amqp:// without a broker: identity, URL forms, and a dead RabbitMQ never raises."""

from __future__ import annotations

from collections.abc import Iterator

import amqp
import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import pyamqp

import celery_durable  # noqa: F401 - registers the durable alias
from celery_durable.transport.amqp import DurableAmqpTransport
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import free_port


@pytest.fixture(autouse=True)
def _close_spillers() -> Iterator[None]:
    yield
    shutdown_all(0.0)


@pytest.mark.parametrize("scheme", ["amqp", "pyamqp", "amqps"])
def test_presents_the_py_amqp_identity(scheme: str) -> None:
    conn = Connection(f"durable+{scheme}://guest:guest@127.0.0.1:{free_port()}/vh")
    transport = conn.transport
    assert isinstance(transport, DurableAmqpTransport)
    assert isinstance(transport, pyamqp.Transport)
    assert (transport.driver_type, transport.driver_name) == ("amqp", "py-amqp")
    assert transport.implements.asynchronous and transport.implements.heartbeats
    assert set(amqp.Connection.connection_errors) <= set(conn.connection_errors)
    assert set(amqp.Connection.channel_errors) <= set(conn.channel_errors)
    params = transport.connection_params()
    assert params["virtual_host"] == "vh" and params["userid"] == "guest"
    assert bool(params["ssl"]) is (scheme == "amqps")


def test_broker_transport_setting_with_a_plain_amqp_url() -> None:
    port = free_port()
    conn = Connection(
        f"amqp://guest:guest@127.0.0.1:{port}/vh", transport="celery_durable.transport:Transport"
    )
    assert isinstance(conn.transport, DurableAmqpTransport)
    assert conn.transport.connection_params()["host"] == f"127.0.0.1:{port}"


def test_a_dead_broker_spills_publishes_and_refuses_consumers() -> None:
    conn = Connection(
        f"durable+amqp://guest:guest@127.0.0.1:{free_port()}//",
        transport_options={"publish_timeout": 0.2},
    )
    queue = Queue("q", Exchange("ex", "direct"), routing_key="k",
                  queue_arguments={"x-queue-type": "quorum"}, durable=True)  # fmt: skip
    producer = conn.Producer()
    for i in range(5):
        producer.publish({"i": i}, exchange=queue.exchange, routing_key="k", declare=[queue])
    spiller = conn.transport.spiller
    assert spiller.backlog() == 5 and spiller.breaker.is_open
    store = spiller._store
    assert store is not None
    _, record = store.peek(1)[0]
    ops = [(d["op"], d.get("arguments")) for d in record.declarations]
    assert ("queue_declare", {"x-queue-type": "quorum"}) in ops
    assert [op for op, _ in ops] == ["exchange_declare", "queue_declare", "queue_bind"]
    # What needs the broker's answer raises the inner transport's connection error.
    with pytest.raises(conn.connection_errors):
        queue(conn.default_channel).queue_declare(passive=True)
    conn.close()
