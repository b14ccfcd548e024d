"""Worker start-up hooks: dead-letter capture for all tasks and the metrics exporter.

Connected to Celery's ``worker_init`` signal (main process, before the pool
forks, so prefork children inherit what it sets up) by :func:`connect`, which
``import celery_durable.dlq`` calls; the ``celery`` command imports that package
through our CLI plugin, so every ``celery worker`` gets these hooks.

* ``durable_dlq_all_tasks = True``: installs capture (:func:`celery_durable.dlq.install`).
* ``durable_metrics_port = N``: starts the Prometheus exporter once, in the main
  process (``metrics.start_exporter``); with ``PROMETHEUS_MULTIPROC_DIR`` set it
  aggregates the pool children.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["connect", "start_metrics_exporter"]

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


def connect() -> None:
    """Connect the ``worker_init`` hook (idempotent)."""
    from celery import signals

    signals.worker_init.connect(_on_worker_init, weak=False, dispatch_uid="celery_durable.worker")
