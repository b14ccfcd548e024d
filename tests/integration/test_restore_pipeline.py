"""The pipelined redis publish writes exactly what Kombu's own publish writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery

from celery_durable.restore.message import build_message
from celery_durable.restore.pipeline import pipeline_publisher
from celery_durable.restore.runner import _publish_chunk
from tests.helpers.redis_server import RedisServer
from tests.unit.restore_memstore import make_entry

pytestmark = pytest.mark.integration


def _normalise(raw: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["properties"].pop("delivery_tag")
    return message


@pytest.mark.parametrize("priority", [0, 7])
def test_same_bytes_as_kombu(redis_server: RedisServer, priority: int) -> None:
    app = Celery("pipe", broker=redis_server.url, set_as_current=False)
    app.conf.broker_transport_options = {"priority_steps": list(range(10))}
    entry = make_entry("same-id", queue="pq", args=[1, "ü"])
    entry.properties.update(priority=priority, reply_to="replies")
    message = build_message(entry, app)
    client = redis_server.client()
    with app.producer_pool.acquire(block=True) as producer:
        fast = pipeline_publisher(producer)
        assert fast is not None and fast.usable([message], None)
        fast.publish([message], "json")
        fast_keys = {k: client.lrange(k, 0, -1) for k in client.keys("pq*")}
        client.delete(*fast_keys)
        _publish_chunk(producer, [message], "json", None)
        kombu_keys = {k: client.lrange(k, 0, -1) for k in client.keys("pq*")}
    assert list(fast_keys) == list(kombu_keys)
    [[fast_raw]], [[kombu_raw]] = fast_keys.values(), kombu_keys.values()
    assert _normalise(fast_raw) == _normalise(kombu_raw)


def test_not_used_for_compression_or_fanout(redis_server: RedisServer) -> None:
    app = Celery("pipe", broker=redis_server.url, set_as_current=False)
    message = build_message(make_entry("x"), app)
    with app.producer_pool.acquire(block=True) as producer:
        fast = pipeline_publisher(producer)
        assert fast is not None
        assert not fast.usable([message], "zlib")
        producer.channel.exchange_declare("fan", type="fanout")
        message.exchange = "fan"
        assert not fast.usable([message], None)
