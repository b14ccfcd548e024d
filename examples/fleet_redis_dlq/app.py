"""The Celery app of the fleet example: every worker dumps into one shared redis:// store.

With the default ``file://`` store each host keeps its own dumps; a fleet that
wants one place to look sets ``durable_dlq_url`` to a redis, and any worker (or
the CLI on any machine) lists and restores every host's dumps.

``REDIS_URL``: the broker (default ``redis://localhost:6379/0``).
``DLQ_URL``: the dump store (default ``redis://localhost:6379/1``; use another
server in production, one that outlives the broker's bad days).
"""

from __future__ import annotations

import os

import redis
from celery import Celery
from celery.utils.log import get_task_logger

from celery_durable import enable_restore_schedule

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
DLQ_URL = os.environ.get("DLQ_URL", "redis://localhost:6379/1")
FLAG = "example:storage-up"

app = Celery("app", broker=f"durable+{REDIS_URL}")
app.conf.update(
    broker_connection_retry_on_startup=True,
    # Capture every task's final failure, no decorator needed.
    durable_dlq_all_tasks=True,
    durable_dlq_url=DLQ_URL,
    durable_dlq_flush_interval=0.2,
)
# One beat for the fleet restores the shared store (each tick, whichever worker
# receives the task restores; a lock in the store keeps runs one at a time).
enable_restore_schedule(app)

logger = get_task_logger(__name__)


@app.task(name="example.resize")
def resize(image_id: int) -> None:
    """Resize an image; fails while the (pretend) object storage is down."""
    if not redis.Redis.from_url(REDIS_URL).exists(FLAG):
        raise OSError(f"object storage unreachable, image {image_id} not resized")
    logger.info("resized image %d", image_id)
