"""The Celery app of the web example (what a Django project's ``celery.py`` would hold).

``REDIS_URL`` names the broker (default ``redis://localhost:6379/0``).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.utils.log import get_task_logger

import celery_durable  # noqa: F401 - registers the durable+ transport alias

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

app = Celery("app", broker=f"durable+{REDIS_URL}")
app.conf.update(
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "publish_timeout": 0.5,
        # Kombu's redis transport, not ours: a message the worker had fetched but
        # not started when redis died is redelivered after visibility_timeout
        # (default 1 h). 10 s suits this demo; in production keep it longer than
        # your longest task and ETA.
        "visibility_timeout": 10,
    },
)

logger = get_task_logger(__name__)


@app.task(name="example.send_receipt", ignore_result=True)
def send_receipt(order_id: int, served_by: int) -> None:
    logger.info("processed order %d (published by web process %d)", order_id, served_by)
