"""Restore dead-letter dumps: the ``celery_durable.restore`` beat task.

Importing this package registers the task and the ``durable_restore``
remote-control command (both needed in every worker that should restore its
host's ``file://`` dumps).  Modules:

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
