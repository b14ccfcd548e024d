"""Worker and beat start-up hooks: dead-letter capture, metrics, the durable transport.

Connected by :func:`connect`, which ``import celery_durable.dlq`` calls; the
``celery`` command imports that package through our CLI plugin, so every
``celery worker`` and ``celery beat`` gets these hooks.

``worker_init`` (main process, before the pool forks, so prefork children
inherit what it sets up):

* ``durable_dlq_all_tasks = True``: installs capture (:func:`celery_durable.dlq.install`).
* ``durable_metrics_port = N``: starts the Prometheus exporter once, in the main
  process (``metrics.start_exporter``); with ``PROMETHEUS_MULTIPROC_DIR`` set it
  aggregates the pool children.

``worker_ready`` (main process, once the pool and the consumer run) and
``beat_init`` (:func:`connect_transport_hooks`, also connected when the durable
redis transport is imported): :func:`start_durable_transport` starts the app's
durable drainer, which adopts and drains stores that dead producers left behind
and keeps looking for new ones, although this process may never publish.
Building a transport has no side effects, so without these hooks only a
process that spills would adopt.  ``worker_ready`` rather than ``worker_init``:
the drainer is a thread, and the prefork pool forks its children before it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = [
    "connect",
    "connect_transport_hooks",
    "start_durable_transport",
    "start_metrics_exporter",
]

logger = logging.getLogger(__name__)

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
    app = getattr(sender, "app", None)
    if app is None:
        return
    from .settings import durable_settings

    # A bad durable_* setting or unknown durable_dlq_serializer raises here:
    # Celery logs it as "Signal handler ... raised: ConfigError(...)" at start-up.
    settings = durable_settings(app.conf)
    from .dlq.codec import codec_for_app

    codec_for_app(app)
    if settings["durable_dlq_all_tasks"]:
        from .dlq import install

        install(app)
    port = settings["durable_metrics_port"]
    if port is not None:
        start_metrics_exporter(port)


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
    if app is not None:
        start_durable_transport(app)


def connect_transport_hooks() -> None:
    """Start the durable drainer when a worker is ready and when beat starts (idempotent)."""
    from celery import signals

    signals.worker_ready.connect(_on_ready, weak=False, dispatch_uid="celery_durable.transport")
    signals.beat_init.connect(_on_ready, weak=False, dispatch_uid="celery_durable.transport")


def connect() -> None:
    """Connect the ``worker_init`` hook and the transport hooks (idempotent)."""
    from celery import signals

    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="celery_durable.worker")
    connect_transport_hooks()
