"""Restore dead-letter dumps: the ``celery_durable.restore`` beat task.

Importing this package registers the task and the ``durable_restore``
remote-control command, both needed in every worker that should restore its
host's ``file://`` dumps.  Calling :func:`enable_restore_schedule` in the app
module imports it; a worker whose app module does not call it needs
``app.conf.imports = ["celery_durable.restore"]`` (or ``include=``), otherwise it
ignores the broadcast and its host's dumps stay where they are.

With ``file://`` each worker restores its own host's store at up to
``durable_restore_batch`` / ``durable_restore_rate`` per tick; with ``redis://``
the one worker that receives the task restores the shared store.  Modules:

* ``policy``: backoff and parking rules;
* ``message``: rebuild the original Celery message from a dump;
* ``gate``: per-queue rate control (allow rate, postponement);
* ``lock``: one run per store at a time;
* ``runner``: one bounded restore run (plan, publish in chunks, delete);
* ``control`` / ``task`` / ``schedule``: fan-out command, task, beat entry.
"""

from __future__ import annotations

from . import control, task
from .runner import RestoreOptions, RestoreReport, restore
from .schedule import enable_restore_schedule

__all__ = [
    "RestoreOptions",
    "RestoreReport",
    "control",
    "enable_restore_schedule",
    "restore",
    "task",
]
