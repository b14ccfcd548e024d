"""``enable_restore_schedule(app, every=60.0)``: restore dumps from beat."""

from __future__ import annotations

from typing import Any

from .task import TASK_NAME

__all__ = ["SCHEDULE_NAME", "enable_restore_schedule"]

SCHEDULE_NAME = "celery-durable-restore"


def enable_restore_schedule(app: Any, every: float = 60.0) -> str:
    """Add beat entry ``celery-durable-restore`` running ``celery_durable.restore``.

    Importing this module registers the task (a shared task) and the
    ``durable_restore`` control command the task broadcasts for ``file://``
    stores, so calling this in the app module is all a worker needs.  A tick
    expires after ``every`` seconds: ticks that waited out a worker outage are
    dropped instead of piling up.
    """
    if every <= 0:
        from ..exceptions import ConfigError

        raise ConfigError(f"enable_restore_schedule: every must be > 0, got {every!r}")
    return str(
        app.add_periodic_task(every, app.signature(TASK_NAME), name=SCHEDULE_NAME, expires=every)
    )
