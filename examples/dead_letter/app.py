"""The Celery app of the dead-letter example: capture final failures, restore them from beat.

``charge`` fails while the (pretend) payment service is down, which here means
while the redis key ``example:payments-up`` is missing.  Its final failures are
dumped (``@dead_letter``); once ``fix.py`` sets the key, the beat entry that
:func:`enable_restore_schedule` adds republishes them and they succeed, with
their original task ids.

``REDIS_URL`` names the broker (default ``redis://localhost:6379/0``).
``RESTORE_BACKOFF`` is the seconds before a dump is first retried (default 5;
production default 60, doubling with every restore).
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from celery.utils.log import get_task_logger

from celery_durable import dead_letter, enable_restore_schedule

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
FLAG = "example:payments-up"

app = Celery("app", broker=f"durable+{REDIS_URL}")
app.conf.update(
    broker_connection_retry_on_startup=True,
    # Dumps go to the default file:// store under $CELERY_DURABLE_DIR/dlq.
    durable_dlq_flush_interval=0.2,
    durable_restore_backoff=float(os.environ.get("RESTORE_BACKOFF", "5")),
)
# Beat runs task celery_durable.restore every 2 s (default every=60).
enable_restore_schedule(app, every=2.0)

logger = get_task_logger(__name__)


@dead_letter
@app.task(name="example.charge", bind=True)
def charge(self: Any, order_id: int) -> None:
    """Charge an order; raises while the payment service is down."""
    if not redis.Redis.from_url(REDIS_URL).exists(FLAG):
        raise ConnectionError(f"payment service down, order {order_id} not charged")
    restores = (self.request.headers or {}).get("x-durable-restores", 0)
    logger.info("charged order %d (task %s, restore #%s)", order_id, self.request.id, restores)
