"""The ``celery_durable.restore`` task that beat runs.

With a shared store (``redis://``) the worker that receives the task restores
directly; the store's run lock makes sure only one does at a time.  With a
``file://`` store every host has its own dumps, so the task broadcasts the
``durable_restore`` control command and each worker restores its own host's.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .control import COMMAND
from .runner import restore
from .stores import is_host_local, open_app_store, store_url

__all__ = ["TASK_NAME", "restore_task"]

TASK_NAME = "celery_durable.restore"

#: Seconds the task waits for workers to acknowledge the broadcast.
FANOUT_REPLY_TIMEOUT = 1.0


def run_restore(app: Any) -> dict[str, Any]:
    """What one beat tick does (the task body, callable without a worker)."""
    url = store_url(app)
    if is_host_local(url):
        replies = app.control.broadcast(COMMAND, reply=True, timeout=FANOUT_REPLY_TIMEOUT)
        return {"fanout": {k: v for reply in replies or [] for k, v in reply.items()}}
    store = open_app_store(app)
    try:
        return restore(app, store).as_dict()
    finally:
        store.close()


@shared_task(name=TASK_NAME, bind=True, ignore_result=True)
def restore_task(self: Any) -> dict[str, Any]:
    """Restore due dead-letter dumps (celery-durable)."""
    return run_restore(self.app)
