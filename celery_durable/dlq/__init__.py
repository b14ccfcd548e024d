"""Dead-letter capture: dump tasks on their final failure, list, export and purge them.

Use ``@dead_letter`` (``from celery_durable import dead_letter``) on a task, or
set ``app.conf.durable_dlq_all_tasks = True``.

How a worker learns about capture:

* ``@dead_letter`` imports :mod:`celery_durable.dlq.capture`, which connects the
  ``task_failure`` handler in every process that imports the task module;
* ``durable_dlq_all_tasks`` needs no import in user code: the ``celery`` command
  loads our CLI plugin (the ``celery.commands`` entry point), which imports this
  package, which connects a ``worker_init`` hook (:mod:`celery_durable.worker`)
  that installs capture before the pool forks;
* a worker started some other way (``app.Worker(...).start()`` in a script) calls
  :func:`install` itself.

Where a dump goes: :mod:`.capture` (the ``task_failure`` handler) builds a
:class:`DumpEntry` (:mod:`.message`), the process's :class:`~.dumpqueue.DumpQueue`
encodes it once (the store's :mod:`.codec`) and appends it to the process's
write-ahead log (:mod:`.wal`) before the handler returns, then writes the log's
segments to the dump store (:mod:`.stores`) in batches.

Nothing here imports Celery's worker machinery until capture is installed.
"""

from __future__ import annotations

from typing import Any

from .base import DumpEntry, DumpStore, EncodedDump, QuarantinedDump, is_parked
from .stores import open_store, register_store, store_for_app

__all__ = [
    "DumpEntry",
    "DumpStore",
    "EncodedDump",
    "QuarantinedDump",
    "install",
    "is_parked",
    "open_store",
    "register_store",
    "store_for_app",
]


def install(app: Any = None) -> None:
    """Connect dead-letter capture in this process (idempotent).

    With ``app`` its ``durable_*`` settings are validated now, so a typo fails at
    start-up rather than at the first task failure.
    """
    from . import capture  # noqa: F401 - importing connects the signal handlers

    if app is not None:
        from ..settings import durable_settings

        durable_settings(app.conf)


def _connect_worker_hooks() -> None:
    from ..worker import connect

    connect()


_connect_worker_hooks()
