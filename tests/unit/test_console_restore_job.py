"""A console restore job: the runner's restore, under the store's lock, progress counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Queue

from celery_durable.dlq import open_store
from celery_durable.restore.gate import clear_postponements
from celery_durable.restore.lock import run_lock
from celery_durable.web.jobs import RestoreJob
from tests.helpers.wait import wait_for
from tests.unit.restore_memstore import make_entry


def drain(app: Celery, queue: str) -> list[Any]:
    out = []
    with Connection(app.conf.broker_url) as conn:
        q = Queue(queue, channel=conn.default_channel)
        q.declare()
        while (msg := q.get(no_ack=True)) is not None:
            out.append(msg)
    return out


@pytest.fixture
def app(tmp_path: Path) -> Celery:
    clear_postponements()
    app = Celery("console-job", broker="memory://", set_as_current=False)
    app.conf.durable_dlq_url = (tmp_path / "dlq").as_uri()
    drain(app, "celery")
    return app


def test_a_job_restores_the_chosen_dumps_with_their_ids(app: Celery) -> None:
    store = open_store(app.conf.durable_dlq_url)
    entries = [make_entry(f"task-{i}") for i in range(3)]
    store.write(entries)
    chosen = {entries[0].entry_id, entries[2].entry_id}
    job = RestoreJob("restore 2", total=2)
    job.start(app, lambda: open_store(app.conf.durable_dlq_url), chosen, rate=None)
    wait_for(lambda: not job.running, timeout=30, message="the job to finish")
    assert job.state == "done", job.error
    assert job.restored == 2 and job.percent == 100
    ids = sorted(m.headers["id"] for m in drain(app, "celery"))
    assert ids == ["task-0", "task-2"]
    assert [e.task_id for e in store.entries()] == ["task-1"]
    note = store.get_note("last-restore")  # type: ignore[attr-defined]
    assert note is not None and note["restored"] == 2


def test_a_job_waits_for_no_one_when_the_lock_is_taken(app: Celery) -> None:
    store = open_store(app.conf.durable_dlq_url)
    entry = make_entry("busy-1")
    store.write([entry])
    held = run_lock(store.url)  # the beat's run, say
    assert held.acquire()
    try:
        job = RestoreJob("restore 1", total=1)
        job.start(app, lambda: open_store(app.conf.durable_dlq_url), {entry.entry_id}, None)
        wait_for(lambda: not job.running, timeout=30, message="the job to finish")
        assert job.state == "busy" and job.restored == 0
    finally:
        held.release()
    assert store.count() == 1
