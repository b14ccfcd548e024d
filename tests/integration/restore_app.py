"""The Celery app the restore tests run (``celery -A restore_app worker|beat``).

Configured from the environment: ``RESTORE_BROKER`` (broker), ``RESTORE_STATE``
(a redis db where tasks record what ran and read the "cause fixed" flag),
``RESTORE_DLQ_URL`` (dump store; empty = file store under CELERY_DURABLE_DIR),
``RESTORE_EVERY`` (beat interval) and ``RESTORE_CONF`` (JSON of ``durable_*``
settings).  Calling :func:`enable_restore_schedule` here is what registers the
task and the ``durable_restore`` control command in the worker.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery, signals

from celery_durable import dead_letter, enable_restore_schedule

app = Celery("restore_app", broker=os.environ.get("RESTORE_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_default_queue="work",
    task_routes={"celery_durable.restore": {"queue": "durable-restore"}},
    worker_prefetch_multiplier=8,
    durable_dlq_url=os.environ.get("RESTORE_DLQ_URL", ""),
    durable_dlq_flush_interval=0.1,
    **json.loads(os.environ.get("RESTORE_CONF", "{}")),
)
enable_restore_schedule(app, every=float(os.environ.get("RESTORE_EVERY", "0.5")))

_state: redis.Redis | None = None


def state() -> redis.Redis:
    global _state
    if _state is None:
        _state = redis.Redis.from_url(os.environ["RESTORE_STATE"], socket_timeout=10)
    return _state


@dead_letter
@app.task(name="restore_app.flaky", bind=True)
def flaky(self: Any, n: int) -> int:
    """Fails until the test sets the ``fixed`` flag; counts every run by task id."""
    s = state()
    if s.get("fixed") != b"1":
        raise RuntimeError(f"flaky {n}: cause not fixed yet")
    s.hincrby("runs", self.request.id, 1)
    return n


@dead_letter
@app.task(name="restore_app.always_fails", bind=True)
def always_fails(self: Any) -> None:
    """Records the time of every attempt, then fails."""
    restores = (self.request.headers or {}).get("x-durable-restores", 0)
    state().rpush(f"attempts:{self.request.id}", json.dumps([time.time(), restores]))
    raise RuntimeError("always fails")


@dead_letter
@app.task(name="restore_app.fails_by_round", bind=True)
def fails_by_round(self: Any) -> None:
    """Fails with a message naming how many restores it had, so each failure differs."""
    restores = (self.request.headers or {}).get("x-durable-restores", 0)
    raise KeyError(f"failed after {restores} restores")


@app.task(name="restore_app.noop")
def noop() -> None:
    """Filler that keeps a queue long."""


@signals.task_postrun.connect
def _count_restore_runs(sender: Any = None, retval: Any = None, **_: Any) -> None:
    if sender is not None and sender.name == "celery_durable.restore":
        s = state()
        s.incr("restore_runs")
        s.rpush("restore_results", json.dumps(retval, default=str))
