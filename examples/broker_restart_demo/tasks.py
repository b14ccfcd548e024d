"""The demo's Celery app: one task that notes each execution in a file."""

from __future__ import annotations

import os

from celery import Celery

import celery_durable  # noqa: F401 - registers the durable+redis:// transport

app = Celery("tasks", broker=os.environ.get("DEMO_BROKER_URL", "durable+redis://localhost:6379/0"))
app.conf.worker_hijack_root_logger = False
app.conf.worker_prefetch_multiplier = 1
# Kombu's redis transport, not celery-durable: a message the worker had taken
# from redis when redis died is re-queued after `visibility_timeout` (default
# one hour).  A short one lets the demo count it within its run.
app.conf.broker_transport_options = {"visibility_timeout": 10, "unacked_restore_interval": 2}


@app.task(ignore_result=True)
def work(seq: int) -> None:
    # O_APPEND writes of one short line are atomic: a crash never leaves half a line.
    with open(os.environ["DEMO_EXECUTED_FILE"], "a") as out:
        out.write(f"{seq}\n")
