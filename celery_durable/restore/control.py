"""The ``durable_restore`` remote-control command: restore this host's dumps.

A ``file://`` dump store is a directory on one machine, so the beat task cannot
restore it from wherever it happens to run.  Instead it broadcasts
``durable_restore``; every worker that imported :mod:`celery_durable.restore`
(``enable_restore_schedule`` does, or list it in ``imports``) answers at once and
runs one restore of its own store in a background thread, so the worker's event
loop is never blocked.  It replies ``busy`` while its previous run is still going.
Two workers on one host share the store's ``flock``: one restores, the other's
run finds the lock taken and does nothing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.worker.control import control_command

__all__ = ["COMMAND", "durable_restore", "start_local_restore"]

logger = logging.getLogger(__name__)

COMMAND = "durable_restore"
_RUNNING = threading.Lock()


def _run(app: Any) -> None:
    from .runner import restore
    from .stores import open_app_store

    try:
        store = open_app_store(app)
        try:
            report = restore(app, store)
        finally:
            store.close()
        logger.info("durable_restore: %s", report.as_dict())
    except Exception:
        logger.exception("durable_restore: restore run failed")
    finally:
        _RUNNING.release()


def start_local_restore(app: Any) -> bool:
    """Start one restore run in a thread; False if one is already running here."""
    if not _RUNNING.acquire(blocking=False):
        return False
    try:
        threading.Thread(
            target=_run, args=(app,), name="celery-durable-restore", daemon=True
        ).start()
    except BaseException:
        _RUNNING.release()
        raise
    return True


@control_command(name=COMMAND)
def durable_restore(state: Any, **kwargs: Any) -> dict[str, Any]:
    """Restore this host's dead-letter dumps (celery-durable)."""
    started = start_local_restore(state.consumer.app)
    return {"ok": "started" if started else "busy"}
