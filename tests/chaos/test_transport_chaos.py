"""Redis dies at the worst moments of a delivery through durable+redis://."""

from __future__ import annotations

import pytest
from kombu import Connection

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.transport.spiller import shutdown_all
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.chaos


def test_redis_dies_between_brpop_and_unacked_bookkeeping(redis_server: RedisServer) -> None:
    """Plain Kombu loses this message: popped from redis, never recorded as unacked."""
    url = f"durable+redis://127.0.0.1:{redis_server.port}/0"
    with Connection(url) as producer_conn:
        producer_conn.Producer().publish({"n": 1}, routing_key="q", headers={"h": "v"})
    assert redis_server.client().llen("q") == 1

    conn = Connection(url)
    channel = conn.default_channel
    # The first half of a delivery, for real: the message leaves redis...
    raw = channel._get("q")
    message = channel.Message(raw, channel=channel)
    assert redis_server.client().llen("q") == 0
    # ...then redis dies before Kombu records it in the unacked hash.
    redis_server.stop()
    with pytest.raises(conn.connection_errors):
        channel.qos.append(message, message.delivery_tag)

    redis_server.start()  # empty: no persistence, so only our copy can bring it back
    wait_for(lambda: redis_server.client().llen("q") == 1, timeout=30)
    back = channel.Message(channel._get("q"), channel=channel)
    assert back.decode() == {"n": 1}
    assert back.headers["h"] == "v"
    assert back.delivery_info.get("redelivered") is True
    conn.release()
    shutdown_all(0.0)
