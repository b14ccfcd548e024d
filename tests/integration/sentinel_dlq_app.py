"""The Celery app of the dead-letter tests under Sentinel (``celery -A sentinel_dlq_app``).

Broker ``HA_BROKER`` (``durable+sentinel://...``) with ``HA_TRANSPORT_OPTIONS``
(JSON, ``master_name``), dump store ``HA_DLQ_URL`` (``redis+sentinel://...``),
and ``HA_RESULTS`` (a plain redis the tests never kill) where ``ha.flaky``
records the runs that succeeded; it fails until the key ``fixed`` is set there.
``HA_RESTORE_EVERY`` (seconds) adds the beat restore entry, with no backoff.
"""

from __future__ import annotations

import json
import os

import redis
from celery import Celery

from celery_durable import dead_letter, enable_restore_schedule

app = Celery("sentinel_dlq_app", broker=os.environ.get("HA_BROKER", "durable+sentinel://"))
app.conf.update(
    broker_transport_options=json.loads(os.environ.get("HA_TRANSPORT_OPTIONS", "{}")),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_default_queue="ha",
    durable_dlq_url=os.environ.get("HA_DLQ_URL", ""),
    durable_dlq_flush_interval=0.2,
    durable_restore_backoff=0.0,
)
if os.environ.get("HA_RESTORE_EVERY"):
    enable_restore_schedule(app, every=float(os.environ["HA_RESTORE_EVERY"]))


@dead_letter
@app.task(name="ha.flaky")
def flaky(n: int) -> None:
    results = redis.Redis.from_url(os.environ["HA_RESULTS"])
    if not results.exists("fixed"):
        raise RuntimeError(f"flaky {n}: not fixed yet")
    results.rpush("succeeded", n)
