"""durable+amqp:// without a broker: identity, URL forms, and a dead RabbitMQ never raises."""

from __future__ import annotations

from collections.abc import Iterator

import amqp
import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import pyamqp

import celery_durable  # noqa: F401 - registers the durable alias
from celery_durable.transport import _inner_url
from celery_durable.transport.amqp import DurableAmqpTransport
from celery_durable.transport.registry import shutdown_all
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
    store = spiller.router.store
    assert store is not None
    _, record = store.peek(1)[0]
    ops = [(d["op"], d.get("arguments")) for d in record.declarations]
    assert ("queue_declare", {"x-queue-type": "quorum"}) in ops
    assert [op for op, _ in ops] == ["exchange_declare", "queue_declare", "queue_bind"]
    # What needs the broker's answer raises the inner transport's connection error.
    with pytest.raises(conn.connection_errors):
        queue(conn.default_channel).queue_declare(passive=True)
    conn.close()


def test_amqp_and_pyamqp_urls_to_one_broker_share_a_spill_directory() -> None:
    port = free_port()
    urls = [
        f"durable+amqp://guest:guest@127.0.0.1:{port}//",
        f"durable+pyamqp://guest:guest@127.0.0.1:{port}//",
        f"durable+pyamqp://guest:guest@127.0.0.1:{port}",
    ]
    transports = [Connection(url).transport for url in urls]
    assert {t.inner_url for t in transports} == {f"amqp://guest:guest@127.0.0.1:{port}//"}
    assert len({t.spiller.router.store_dir for t in transports}) == 1
    assert Connection(urls[1]).as_uri() == f"durable+amqp://guest:**@127.0.0.1:{port}//"
    assert _inner_url(Connection(urls[1])) == transports[0].inner_url  # the CLI's view


def test_amqps_defaults_to_the_tls_port() -> None:
    transport = Connection("durable+amqps://guest:guest@example.invalid//").transport
    assert transport.address.port == pyamqp.DEFAULT_SSL_PORT
    assert transport.inner_url.startswith("amqps://")


def test_the_durable_alias_knows_rabbitmq_connection_errors_before_connecting() -> None:
    # Celery's consumer reads conninfo.connection_errors from the alias class
    # ("durable") before any transport exists: a broker that closes the
    # connection (ConnectionForced) must be a connection error there.
    conn = Connection(f"durable+amqp://guest:guest@127.0.0.1:{free_port()}//")
    assert conn.transport_cls == "durable"
    assert issubclass(amqp.exceptions.ConnectionForced, conn.connection_errors)
    assert issubclass(amqp.exceptions.RecoverableConnectionError, conn.connection_errors)
    assert issubclass(amqp.exceptions.ChannelError, conn.channel_errors)
    assert issubclass(amqp.exceptions.ConnectionForced, conn.recoverable_connection_errors)
    # Once built, the connection names durable+amqp: py-amqp's errors exactly.
    other = Connection(f"durable+amqp://guest:guest@127.0.0.1:{free_port()}//")
    other.transport  # noqa: B018 - building it rewrites transport_cls
    assert other.connection_errors == pyamqp.Transport.connection_errors
    assert other.channel_errors == pyamqp.Transport.channel_errors


def test_a_clone_made_before_the_transport_was_built_stays_amqp() -> None:
    # Kombu's clone() reads transport_cls ("durable") before it builds the
    # transport, which rewrites the fields to the inner ones (127.0.0.1, port,
    # vhost): a Celery worker's mingle/pidbox publish went to durable+redis
    # ("the redis database must be a number").
    port = free_port()
    conn = Connection(f"durable+amqp://guest:guest@127.0.0.1:{port}/vh-1")
    clone = conn.clone()
    assert clone.transport_cls == "durable"
    assert isinstance(clone.transport, DurableAmqpTransport)
    assert clone.transport.inner_url == conn.transport.inner_url


def test_every_failover_url_down_connects_and_publishing_spills() -> None:
    p1, p2 = free_port(), free_port()
    conn = Connection(
        f"durable+amqp://guest:guest@127.0.0.1:{p1}//;durable+amqp://guest:guest@127.0.0.1:{p2}//",
        transport_options={"publish_timeout": 0.2},
    )
    assert conn.connect()
    assert conn.transport.address.port == p2  # the first was refused, the last one kept
    Producer(conn.default_channel).publish({"x": 1}, routing_key="q")
    assert conn.transport.spiller.backlog() == 1
    conn.release()


def test_a_celery_worker_on_durable_amqp_reconnects_on_connection_forced() -> None:
    # celery.worker.consumer.Consumer: connection_errors = conninfo.connection_errors,
    # read from app.connection_for_read() before it connects.
    from celery import Celery

    app = Celery("t", broker=f"durable+amqp://guest:guest@127.0.0.1:{free_port()}//",
                 set_as_current=False)  # fmt: skip
    conninfo = app.connection_for_read()
    assert issubclass(amqp.exceptions.ConnectionForced, conninfo.connection_errors)
    assert issubclass(amqp.exceptions.ConnectionForced, conninfo.recoverable_connection_errors)
    conninfo.release()
