"""A Celery app that never imports ``celery_durable``: capture must come from settings alone.

``durable_dlq_all_tasks`` and ``durable_metrics_port`` reach the worker through
the ``celery`` command's plugin (``celery.commands`` entry point) and its
``worker_init`` hook.  Environment as in :mod:`tests.integration.dlq_app`.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from celery import Celery, Task
from celery.worker.request import Request

app = Celery("dlq_plain_app", broker=os.environ.get("DLQ_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_default_queue="dlq",
    durable_dlq_url=os.environ.get("DLQ_URL", ""),
    durable_dlq_all_tasks=True,
    durable_dlq_flush_interval=0.2,
)
if os.environ.get("DLQ_METRICS_PORT"):
    app.conf.durable_metrics_port = int(os.environ["DLQ_METRICS_PORT"])


@app.task(name="dlq.plain")
def plain(n: int) -> None:
    raise RuntimeError(f"plain {n}")


class AuditedRequest(Request):
    """A user's own Request subclass: capture must compose with it, not replace it."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        logging.getLogger("audit").warning("audited timeout of %s", self.id)
        super().on_timeout(soft, timeout)


class AuditedTask(Task):
    Request = AuditedRequest


@app.task(name="dlq.plain_sleepy", base=AuditedTask, time_limit=2)
def plain_sleepy(seconds: float) -> None:
    time.sleep(seconds)


@app.task(name="dlq.plain_die")
def plain_die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
