"""Worker and beat start-up hooks: dead-letter capture, metrics, the durable transport.

Connected by :func:`connect`, which ``import celery_durable.dlq`` calls; the
``celery`` command imports that package through our CLI plugin, so every
``celery worker`` and ``celery beat`` gets these hooks.

``worker_init`` (main process, before the pool forks, so prefork children
inherit what it sets up):

* ``durable_dlq_url`` must name a registered store scheme: an unknown one is a
  :class:`~celery_durable.exceptions.ConfigError` here, so the worker does not start.
* ``durable_dlq_all_tasks = True``: installs capture (:func:`celery_durable.dlq.install`).
* Every captured task (``@dead_letter`` or all tasks) gets a worker ``Request``
  class that reports main-process failures (hard time limits, lost pool
  processes) to capture (:func:`celery_durable.dlq.capture.use_request_classes`).
* Dump write-ahead logs left by dead processes are adopted and flushed: by the
  main process here, and by each pool child at ``worker_process_init``.
* ``durable_metrics_port = N``: starts the Prometheus exporter once, in the main
  process (``metrics.start_exporter``); with ``PROMETHEUS_MULTIPROC_DIR`` set it
  aggregates the pool children.

Errors in these hooks are raised (Celery logs them and, for ``ConfigError``,
the worker exits: see :func:`_on_worker_init`).

``worker_ready`` (main process, once the pool and the consumer run) and
``beat_init`` (:func:`connect_transport_hooks`, also connected when the durable
redis transport is imported): :func:`start_durable_transport` starts the app's
durable drainer, which adopts and drains stores that dead producers left behind
and keeps looking for new ones, although this process may never publish.
Building a transport has no side effects, so without these hooks only a
process that spills would adopt.  ``worker_ready`` rather than ``worker_init``:
the drainer is a thread, and the prefork pool forks its children before it.

**Not in the main process of a forking (prefork) pool.**  LevelDB is not
fork-safe (:mod:`celery_durable.spill.forksafe`): once a process's LevelDB has
flushed or compacted, a child forked from it hangs at its own first memtable
switch.  The prefork main process forks children all its life (one replaced
after ``max_tasks_per_child``, a crash, autoscale), so it never opens a spill
store: each pool child starts the drainer at ``worker_process_init`` instead
(children never fork, and LevelDB's lock lets exactly one child adopt a given
store).  Pool children rather than a separate spawned process: they already
exist, are supervised and replaced by the pool, and need no process of our
own to start, watch and stop.  Solo, threads, gevent and eventlet workers and
beat (its own process, or ``worker -B``'s beat process) adopt in-process.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from .exceptions import ConfigError

__all__ = [
    "connect",
    "connect_transport_hooks",
    "start_durable_transport",
    "start_metrics_exporter",
]

logger = logging.getLogger(__name__)

#: The app whose worker this process belongs to (pool children inherit it).
_worker_app: Any = None

#: pid of a worker main process whose pool forks, and its app: that process
#: never starts the drainer, its pool children do (see the module docstring).
_forking_main_pid: int | None = None
_forking_app: Any = None

_exporter_started = False
_exporter_lock = threading.Lock()


def start_metrics_exporter(port: int) -> bool:
    """Start the exporter on ``port`` unless this process already did; True if started."""
    global _exporter_started
    with _exporter_lock:
        if _exporter_started:
            return False
        from .metrics import start_exporter

        start_exporter(port)
        _exporter_started = True
        logger.info("celery-durable: metrics exporter on port %d", port)
        return True


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    global _worker_app
    app = getattr(sender, "app", None)
    if app is None:
        return
    try:
        _check(app)
    except ConfigError as exc:
        # Celery's signal dispatch logs and swallows a handler's Exception, so
        # the worker would start anyway: SystemExit stops it, with one clear line.
        raise SystemExit(f"celery-durable: configuration error: {exc}") from None
    from .settings import durable_settings

    settings = durable_settings(app.conf)
    if settings["durable_dlq_all_tasks"]:
        from .dlq import install

        install(app)
    if "celery_durable.dlq.capture" in sys.modules:
        from .dlq import capture

        if capture.use_request_classes(app):
            _worker_app = app
            _adopt(app)
    port = settings["durable_metrics_port"]
    if port is not None:
        start_metrics_exporter(port)


def _check(app: Any) -> None:
    """Every ``durable_*`` setting that can be wrong, checked before the worker starts."""
    from .dlq.codec import codec_for_app
    from .dlq.stores import default_url, factory_for
    from .settings import durable_settings

    settings = durable_settings(app.conf)
    codec_for_app(app)
    factory_for(settings["durable_dlq_url"] or default_url())


def _pool_forks(pool_cls: Any) -> bool:
    """True if ``pool_cls`` (a name, alias or class) forks its pool processes."""
    if pool_cls is None:
        return False
    try:
        from celery.concurrency import get_implementation
        from celery.concurrency.prefork import TaskPool

        cls = get_implementation(pool_cls)
        return isinstance(cls, type) and issubclass(cls, TaskPool)
    except Exception:  # an unknown pool is not ours to judge: Celery reports it
        return False


def _on_worker_process_init(**_: Any) -> None:
    if _worker_app is not None:
        _adopt(_worker_app)


def _note_pool(sender: Any = None, **_: Any) -> None:
    """``worker_init``: remember a main process whose pool forks (it must not adopt)."""
    global _forking_main_pid, _forking_app
    app = getattr(sender, "app", None)
    if app is not None and _pool_forks(getattr(sender, "pool_cls", None)):
        _forking_main_pid, _forking_app = os.getpid(), app


def _on_pool_child(**_: Any) -> None:
    """``worker_process_init``: a prefork child starts the drainer the main process may not."""
    if _forking_app is not None and os.getpid() != _forking_main_pid:
        start_durable_transport(_forking_app)


def _adopt(app: Any) -> None:
    from .dlq import capture

    try:
        capture.adopt_orphans(app)
    except Exception:  # a store that cannot be opened must not stop the worker
        logger.exception("celery-durable: cannot adopt the dump logs of dead processes")


def start_durable_transport(app: Any) -> bool:
    """Start this process's durable drainer for ``app``'s broker; True if it uses one.

    The drainer adopts stores whose owner died and drains them.  Never raises:
    a hook must not stop a worker or beat from starting.
    """
    try:
        conn = app.connection_for_write()
    except Exception:
        logger.exception("celery-durable: cannot read the broker configuration")
        return False
    try:
        spiller = getattr(conn.transport, "spiller", None)
        if spiller is None:
            return False
        spiller.start()
        return True
    except Exception:
        logger.exception("celery-durable: cannot start the durable transport's drainer")
        return False
    finally:
        conn.release()


def _on_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is None:
        return
    if os.getpid() == _forking_main_pid:
        logger.info(
            "celery-durable: the prefork pool's children adopt spill stores, not the main "
            "process (LevelDB is not fork-safe)"
        )
        return
    start_durable_transport(app)


def connect_transport_hooks() -> None:
    """Start the durable drainer when a worker is ready and when beat starts (idempotent)."""
    from celery import signals

    signals.worker_init.connect(_note_pool, weak=False, dispatch_uid="celery_durable.transport")
    signals.worker_process_init.connect(
        _on_pool_child, weak=False, dispatch_uid="celery_durable.transport.child"
    )
    signals.worker_ready.connect(_on_ready, weak=False, dispatch_uid="celery_durable.transport")
    signals.beat_init.connect(_on_ready, weak=False, dispatch_uid="celery_durable.transport")


def connect() -> None:
    """Connect the ``worker_init`` hook and the transport hooks (idempotent)."""
    from celery import signals

    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="celery_durable.worker")
    signals.worker_process_init.connect(
        _on_worker_process_init, weak=False, dispatch_uid="celery_durable.worker.process"
    )
    connect_transport_hooks()
