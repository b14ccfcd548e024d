from __future__ import annotations

from celery_durable.restore.message import RESTORES_HEADER, build_message
from celery_durable.restore.policy import due_at, is_due, is_parked

from .restore_memstore import make_entry


def test_backoff_doubles_with_each_restore() -> None:
    gaps = [due_at(make_entry("t", restores=n, failed_at=100.0), 60.0) - 100.0 for n in range(4)]
    assert gaps == [60.0, 120.0, 240.0, 480.0]
    entry = make_entry("t", restores=1, failed_at=100.0)
    assert not is_due(entry, 60.0, now=219.9)
    assert is_due(entry, 60.0, now=220.0)


def test_parked_from_max_attempts() -> None:
    assert not is_parked(make_entry("t", restores=4), 5)
    assert is_parked(make_entry("t", restores=5), 5)
    assert is_parked(make_entry("t", restores=0), 0)


def test_message_keeps_identity_and_counts_restores() -> None:
    entry = make_entry("abc", restores=2, queue="q1", args=[3, 4])
    entry.embed = {"callbacks": [{"task": "next"}]}
    entry.properties["reply_to"] = "r"
    entry.properties["body_encoding"] = "base64"
    msg = build_message(entry)
    assert msg.headers["id"] == "abc"
    assert msg.headers["task"] == "tasks.add"
    assert msg.headers["root_id"] == "abc"
    assert msg.headers[RESTORES_HEADER] == 3
    assert msg.body[0] == [3, 4]
    assert msg.body[1] == {"k": "v"}
    assert msg.body[2]["callbacks"] == [{"task": "next"}]
    assert msg.body[2]["chord"] is None
    assert msg.properties["correlation_id"] == "abc"
    assert msg.properties["reply_to"] == "r"
    assert "body_encoding" not in msg.properties
    assert (msg.exchange, msg.routing_key, msg.queue) == ("", "q1", "q1")
    assert entry.headers.get(RESTORES_HEADER) is None  # the dump is not modified


def test_queue_from_delivery_info_wins() -> None:
    entry = make_entry("a", exchange="ex", queue="rk")
    entry.delivery_info["queue"] = "real"
    assert build_message(entry).queue == "real"
