"""The Celery app of the console's browser tests (``celery -A console_app``).

Configured from the environment: ``CONSOLE_BROKER`` (redis), ``CONSOLE_DLQ_URL``
(the dump store) and ``CONSOLE_RESULTS`` (where tasks record that they ran).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

from celery_durable import dead_letter


def make_app(broker: str, dlq_url: str) -> Celery:
    app = Celery("console_app", broker=broker)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        task_default_queue="console",
        durable_dlq_url=dlq_url,
        durable_dlq_flush_interval=0.1,
        durable_restore_max_attempts=3,
    )
    return app


app = make_app(
    os.environ.get("CONSOLE_BROKER", "redis://127.0.0.1:6379/0"),
    os.environ.get("CONSOLE_DLQ_URL", ""),
)


def _results() -> redis.Redis:
    return redis.Redis.from_url(os.environ["CONSOLE_RESULTS"])


@dead_letter
@app.task(name="console.charge", bind=True)
def charge(self: Any, order: int, note: str = "") -> None:
    """Fails until the key ``fixed:<task name>`` is set, then records its task id."""
    if not _results().get(f"fixed:{self.name}"):
        raise ValueError(f"card declined for order {order}")
    _results().rpush("ran", self.request.id)


@dead_letter
@app.task(name="console.email", bind=True)
def email(self: Any, to: str) -> None:
    raise KeyError(f"no template for {to}")


@dead_letter
@app.task(name="console.flaky", bind=True)
def flaky(self: Any, n: int) -> None:
    if not _results().get(f"fixed:{self.name}"):
        raise ConnectionError(f"upstream down for job {n}")
    _results().rpush("ran", self.request.id)


@dead_letter
@app.task(name="console.purgeme")
def purgeme(n: int) -> None:
    raise RuntimeError(f"purge me {n}")


@dead_letter
@app.task(name="console.hostile")
def hostile(payload: str) -> None:
    raise RuntimeError(payload)
