"""The restore history header: bounded append, what build_message and a run record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Celery
from kombu import Connection, Queue

from celery_durable.dlq.history import (
    HISTORY_HEADER,
    MAX_HISTORY,
    MAX_MESSAGE,
    append_history,
    restore_history,
)
from celery_durable.restore.gate import clear_postponements
from celery_durable.restore.message import RESTORES_HEADER, build_message
from celery_durable.restore.runner import RestoreOptions, restore

from .restore_memstore import MemoryDumpStore, make_entry


def test_append_keeps_the_last_entries_and_records_the_failure() -> None:
    headers: dict[str, Any] = {}
    entry = make_entry("t-1")
    for n in range(MAX_HISTORY + 5):
        entry.restores = n
        entry.exc_message = f"failure {n}"
        append_history(headers, entry, "beat", 1_700_000_000.0 + n)
    history = headers[HISTORY_HEADER]
    assert len(history) == MAX_HISTORY
    assert [h["restores"] for h in history] == list(range(6, MAX_HISTORY + 6))
    last = history[-1]
    assert last["exc_type"] == "ValueError"
    assert last["exc_message"] == f"failure {MAX_HISTORY + 4}"
    assert last["by"] == "beat" and last["host"]
    assert datetime.fromisoformat(last["at"]).utcoffset() is not None  # UTC, with offset
    assert last["at"] == "2023-11-14T22:13:44+00:00"


def test_long_messages_are_truncated_and_malformed_history_is_dropped() -> None:
    entry = make_entry("t-2")
    entry.exc_message = "x" * 10_000
    headers: dict[str, Any] = {HISTORY_HEADER: [{"restores": 1}, "junk", 3, None]}
    [kept, new] = append_history(headers, entry, "cli", 0.0)
    assert kept == {"restores": 1}
    assert len(new["exc_message"]) == MAX_MESSAGE
    assert restore_history({HISTORY_HEADER: "not a list"}) == []
    assert restore_history(None) == []
    assert restore_history([1, 2]) == []  # type: ignore[arg-type]


def test_a_failure_time_no_calendar_holds_is_kept_as_is() -> None:
    entry = make_entry("t-7", failed_at=9e12)  # year 287168: restore must not choke on it
    [record] = append_history({}, entry, "beat", 0.0)
    assert record["failed_at"] == 9e12
    assert record["at"] == "1970-01-01T00:00:00+00:00"


def test_build_message_appends_to_the_dumped_history() -> None:
    entry = make_entry("t-3", restores=1)
    entry.headers[HISTORY_HEADER] = [{"restores": 1, "by": "beat"}]
    message = build_message(entry, None, "console", 0.0)
    assert message.headers[RESTORES_HEADER] == 2
    assert [h["by"] for h in message.headers[HISTORY_HEADER]] == ["beat", "console"]
    assert message.headers[HISTORY_HEADER][-1]["restores"] == 2
    assert HISTORY_HEADER in entry.headers and len(entry.headers[HISTORY_HEADER]) == 1


def test_a_restore_run_records_its_trigger() -> None:
    clear_postponements()
    app = Celery("history", broker="memory://", set_as_current=False)
    app.conf.task_serializer = "json"
    with Connection(app.conf.broker_url) as conn:
        q = Queue("celery", channel=conn.default_channel)
        q.declare()
        while q.get(no_ack=True) is not None:
            pass
        store = MemoryDumpStore()
        store.write([make_entry("t-4")])
        report = restore(app, store, RestoreOptions(trigger="cli", ignore_backoff=True))
        assert report.restored == 1
        message = q.get(no_ack=True)
    assert message is not None
    [record] = message.headers[HISTORY_HEADER]
    assert record["by"] == "cli" and record["restores"] == 1
    assert record["exc_type"] == "ValueError" and record["exc_message"] == "boom"
