"""The pipelined redis publish writes exactly what Kombu's own publish writes."""

from __future__ import annotations

import datetime
import decimal
import json
import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Exchange, Queue
from kombu.utils.json import loads as kombu_loads

from celery_durable.dlq import open_store
from celery_durable.dlq.history import HISTORY_HEADER, append_history
from celery_durable.restore.message import build_message
from celery_durable.restore.pipeline import pipeline_publisher
from celery_durable.restore.runner import RestoreOptions, _publish_chunk, restore
from tests.helpers.redis_server import RedisServer
from tests.unit.restore_memstore import MemoryDumpStore, make_entry

pytestmark = pytest.mark.integration


def _normalise(raw: bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["properties"].pop("delivery_tag")
    return message


@pytest.mark.parametrize("scheme", ["redis", "durable+redis"])
@pytest.mark.parametrize("priority", [0, 7])
def test_same_bytes_as_kombu(redis_server: RedisServer, priority: int, scheme: str) -> None:
    # durable+redis:// is the broker a restore usually runs on: the fast path too.
    broker = redis_server.url.replace("redis", scheme, 1)
    app = Celery("pipe", broker=broker, set_as_current=False)
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


def _lists(client: Any, pattern: str) -> dict[bytes, list[dict[str, Any]]]:
    found = {}
    for key in sorted(client.keys(pattern)):
        envelopes = []
        for raw in client.lrange(key, 0, -1):
            message = kombu_loads(raw)
            message["properties"].pop("delivery_tag")
            # When the restore ran: the second may differ between the two runs.
            message["headers"][HISTORY_HEADER][-1].pop("at")
            envelopes.append(message)
        found[key] = envelopes
    return found


def test_a_file_store_restore_writes_what_kombu_writes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Every dump decoded, rebuilt and encoded the short way lands in redis exactly as
    Kombu's own publish of the same message (``kombu.utils.json.loads`` of both
    equal, delivery tag aside), in the same lists and order."""
    app = Celery("pipe", broker=redis_server.url, set_as_current=False)
    app.conf.broker_transport_options = {"priority_steps": list(range(10))}
    with app.connection_for_write() as conn:  # a direct exchange bound to "xq"
        Queue("xq", Exchange("dx", type="direct"), routing_key="rk")(conn.default_channel).declare()
    entries = []
    for i, args in enumerate(
        [
            [1, 'ü 日本 "q" \\ \n'],
            [datetime.datetime(2026, 1, 2, 3, 4, 5), decimal.Decimal("1.5")],
            [{"__type__": "plain dict"}, 1e300, -0.0, 2**70],
        ]
    ):
        for queue, exchange in (("pq", ""), ("rk", "dx")):
            entry = make_entry(f"id-{i}-{queue}", queue=queue, args=args, exchange=exchange)
            entry.properties.update(priority=i * 3, reply_to="replies", message_id=f"m{i}")
            entry.headers["stamps"] = {"s": ["ü"]}
            entries.append(entry)
    entries[0].restores = 2
    append_history(entries[0].headers, entries[0], "cli", 1_700_000_000.0)
    entries[0].embed = {"callbacks": [{"task": "cb", "args": []}], "chord": None}
    store = open_store((tmp_path / "dlq").as_uri())
    store.write(entries)
    dumped = list(store.entries())
    client = redis_server.client()

    report = restore(
        app, store, RestoreOptions(batch=None, capacity=10**9, backoff=0.0, max_attempts=9)
    )
    assert report.restored == len(entries) and not report.quarantined
    fast = _lists(client, "*q*")
    client.delete(*fast)

    with app.connection_for_write() as conn:
        producer = conn.Producer()
        now = time.time()
        _publish_chunk(producer, [build_message(e, app, "beat", now) for e in dumped], "json", None)
    kombu = _lists(client, "*q*")
    assert sum(len(v) for v in fast.values()) == len(entries)
    assert fast == kombu


def test_an_unencodable_header_quarantines_its_dump_and_the_run_goes_on(
    redis_server: RedisServer,
) -> None:
    """Before: Kombu's JSON failing on a header failed the whole run, every run."""
    app = Celery("pipe", broker=redis_server.url, set_as_current=False)
    store = MemoryDumpStore()
    bad = make_entry("bad", queue="hq")
    bad.headers["odd"] = {1, 2}  # a set: not JSON
    store.write([bad, make_entry("good", queue="hq")])
    report = restore(app, store, RestoreOptions(capacity=10**9, backoff=0.0))
    assert report.restored == 1 and not report.error
    [(_, task_id, reason)] = report.quarantined
    assert task_id == "'bad'" and "cannot serialize" in reason
    [raw] = redis_server.client().lrange("hq", 0, -1)
    assert kombu_loads(raw)["headers"]["id"] == "good"
