"""A drained message is, on the wire, the message plain Kombu publishes.

The drainer builds each redis message itself from the spilled record
(:func:`celery_durable.redis_pipeline.push_records`) instead of Kombu's
``prepare_message`` / in-place augment / ``dumps``: here a message published
through ``durable+redis://`` (``wal`` mode: every publish is spilled, then
drained) must decode (``kombu.utils.json.loads``) to exactly what
``redis://`` writes for the same publish, in the same redis list (priority),
except the delivery tag, which is fresh and distinct per message.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import uuid
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue
from kombu.utils.json import loads

from celery_durable.redis_pipeline import delivery_tags, push_records
from celery_durable.spill import SpillRecord
from celery_durable.transport.forwarder import prepare_message
from tests.helpers.redis_server import RedisServer
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.integration

HEADERS = {
    "task": "proj.add",
    "id": "7c3a-id",
    "eta": datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
    "day": datetime.date(2026, 1, 2),
    "uid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "price": decimal.Decimal("1.10"),
    "raw": b"\xff\x00",
    "text": "é ü \u2603",
    "nested": {"list": [1, 2.5, None, True], "timelimit": [None, None]},
    "nan": float("inf"),
}

CASES: dict[str, dict[str, Any]] = {
    "default exchange, json": {"body": {"args": [1, "ü"], "kwargs": {}}, "routing_key": "wq"},
    "priority 7": {"body": [1, 2], "routing_key": "wq", "priority": 7},
    "binary body": {
        "body": bytes(range(256)),
        "routing_key": "wq",
        "content_type": "application/octet-stream",
        "content_encoding": "binary",
    },
    "direct exchange": {
        "body": "text body",
        "exchange": Exchange("dx", type="direct"),
        "routing_key": "k",
        "declare": [Queue("wq", Exchange("dx", type="direct"), routing_key="k")],
    },
}


def _lists(client: Any) -> dict[bytes, list[dict[str, Any]]]:
    out = {}
    for key in sorted(client.keys("wq*")):
        messages = [loads(raw) for raw in client.lrange(key, 0, -1)]
        out[key] = messages
    client.delete(*out) if out else None
    return out


def _publish(url: str, options: dict[str, Any], case: dict[str, Any], n: int) -> None:
    with Connection(url, transport_options=options) as conn:
        producer = conn.Producer()
        for _ in range(n):
            producer.publish(
                headers=dict(HEADERS), priority=case.get("priority"), retry=False,
                **{k: v for k, v in case.items() if k != "priority"},
            )  # fmt: skip
        if "durable" in url:
            drainer = conn.transport.spiller.drainer
            wait_for(lambda: drainer.backlog() == 0, message="the wal backlog drained")


@pytest.mark.parametrize("case", list(CASES))
def test_drained_message_equals_kombus_own(redis_server: RedisServer, case: str) -> None:
    client = redis_server.client()
    _publish(redis_server.url, {"priority_steps": list(range(10))}, CASES[case], 1)
    plain = _lists(client)
    options = {"priority_steps": list(range(10)), "publish_mode": "wal"}
    _publish(redis_server.url.replace("redis://", "durable+redis://"), options, CASES[case], 3)
    drained = _lists(client)
    assert list(drained) == list(plain) and len(plain) == 1
    [[expected]], [messages] = plain.values(), drained.values()
    tags = {m["properties"].pop("delivery_tag") for m in messages}
    assert len(tags) == 3 and all(uuid.UUID(t).version == 4 for t in tags)
    expected["properties"].pop("delivery_tag")
    assert messages == [expected] * 3


RECORDS = [
    SpillRecord(body=b"no priority", exchange="", routing_key="wq", properties={}),
    SpillRecord(b"none", "", "wq", "text/plain", "utf-8", {"a": 1}, {"priority": None}),
    SpillRecord(b"high", "", "wq", "application/json", "utf-8", {}, {"priority": 9}),
    SpillRecord(b"\x00\xff", "", "wq", None, None, {"redelivered": True}, {"delivery_mode": 2}),
]


def test_push_records_writes_what_kombus_basic_publish_writes(redis_server: RedisServer) -> None:
    """Record by record, including those Kombu's publish path never produces."""
    client = redis_server.client()
    options = {"priority_steps": list(range(10))}
    with Connection(redis_server.url, transport_options=options) as conn:
        channel = conn.default_channel
        for record in RECORDS:
            message = prepare_message(channel, record)
            channel.basic_publish(message, record.exchange, record.routing_key)
            kombu = _lists(client)
            push_records(channel, [record])
            ours = _lists(client)
            assert list(ours) == list(kombu) and len(kombu) == 1, record
            [[expected]], [[got]] = kombu.values(), ours.values()
            expected["properties"].pop("delivery_tag")
            got["properties"].pop("delivery_tag")
            assert got == expected, record


def test_delivery_tags_are_distinct_uuid4s() -> None:
    tags = list(itertools.islice(delivery_tags(), 10_000))
    assert len(set(tags)) == len(tags)
    assert all(uuid.UUID(t).version == 4 and str(uuid.UUID(t)) == t for t in tags)
