"""The Celery app of the producer/worker example: one task, on the durable transport.

``REDIS_URL`` names the broker (default ``redis://localhost:6379/0``); the app
prefixes it with ``durable+`` so every publish from this app goes through the
durable transport: straight to redis while it is up, to a local spill store
while it is down, drained in order when it is back.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.utils.log import get_task_logger

import celery_durable  # noqa: F401 - registers the durable+ transport alias

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

app = Celery("app", broker=f"durable+{REDIS_URL}")
app.conf.update(
    # A worker started before redis keeps retrying instead of exiting.
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        # Give up on a slow broker after 0.5 s and spill instead (default 1.0).
        "publish_timeout": 0.5,
        # Kombu's redis transport, not ours: a message the worker had fetched but
        # not started when redis died is redelivered after visibility_timeout
        # (default 1 h). 10 s suits this demo; in production keep it longer than
        # your longest task and ETA.
        "visibility_timeout": 10,
    },
)

logger = get_task_logger(__name__)


@app.task(name="example.process_order", ignore_result=True)
def process_order(order_id: int) -> None:
    logger.info("processed order %d", order_id)
