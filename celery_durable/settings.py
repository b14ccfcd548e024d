"""The ``durable_*`` Celery settings (``app.conf``), declared once.

Read them with :func:`durable_settings`; it validates every ``durable_*`` key in
``app.conf`` and raises :class:`~celery_durable.exceptions.ConfigError` naming
the valid settings when one is unknown or has the wrong type.
"""

from __future__ import annotations

from typing import Any

from .options import Option, validate

__all__ = ["SETTINGS", "durable_settings"]

SETTINGS: tuple[Option, ...] = (
    # Dead-letter capture (DESIGN.md section 2)
    Option(
        "durable_dlq_all_tasks",
        bool,
        False,
        "Dump every task on its final failure, not only @dead_letter ones.",
    ),
    Option(
        "durable_dlq_url",
        str,
        "",
        "Dump store URL: file:///path or redis://host:port/db. "
        "Empty means file://$CELERY_DURABLE_DIR/dlq.",
    ),
    Option(
        "durable_dlq_capacity_bytes",
        int,
        1 << 20,
        "Flush the in-process dump buffer when it holds this many bytes.",
        min=1,
    ),
    Option(
        "durable_dlq_flush_interval",
        float,
        1.0,
        "Flush the dump buffer this many seconds after its first item.",
        min=0.0,
    ),
    Option(
        "durable_dlq_version", int, 1, "Dump format version written in every segment header.", min=1
    ),
    Option("durable_dlq_serializer", str, "json", "Kombu serializer used to encode dumps."),
    # Retention of the dump store (DESIGN.md section 2; docs/src/dead-letters.md)
    Option(
        "durable_dlq_max_bytes",
        int,
        1 << 30,
        "Most bytes the dump store keeps (parked dumps included; None: unbounded).",
        min=1,
        nullable=True,
    ),
    Option(
        "durable_dlq_max_entries",
        int,
        100_000,
        "Most dumps the dump store keeps (parked dumps included; None: unbounded).",
        min=1,
        nullable=True,
    ),
    Option(
        "durable_dlq_max_age",
        float,
        180 * 86400.0,
        "Dumps older than this many seconds are expired (None: never).",
        min=0.0,
        nullable=True,
    ),
    Option(
        "durable_dlq_when_full",
        str,
        "drop_oldest",
        "Which dumps go when a max_bytes/max_entries bound is exceeded.",
        choices=("drop_oldest", "drop_newest"),
    ),
    # Restore (DESIGN.md section 3)
    Option(
        "durable_restore_allow_rate",
        float,
        0.8,
        "Feed a queue only while length < allow_rate * queue_capacity.",
        min=0.0,
    ),
    Option(
        "durable_restore_queue_capacity",
        int,
        10000,
        "Nominal capacity of a target queue, in messages.",
        min=1,
    ),
    Option(
        "durable_restore_postpone_interval",
        float,
        30.0,
        "Seconds to postpone a queue that is above the allow rate.",
        min=0.0,
    ),
    Option(
        "durable_restore_batch",
        int,
        1000,
        "Most dumps restored by one run of celery_durable.restore.",
        min=1,
    ),
    Option(
        "durable_restore_rate",
        float,
        None,
        "Most messages per second a restore run publishes (None: unlimited).",
        min=0.0,
        nullable=True,
    ),
    Option(
        "durable_restore_backoff",
        float,
        60.0,
        "A task restored n times is eligible again after backoff * 2**n seconds.",
        min=0.0,
    ),
    Option(
        "durable_restore_max_attempts",
        int,
        5,
        "Restores before an entry is parked (kept, never restored automatically).",
        min=0,
    ),
    # Metrics (DESIGN.md section 5)
    Option(
        "durable_metrics_port",
        int,
        None,
        "Start a Prometheus exporter on this port in the worker (None: off).",
        min=0,
        nullable=True,
    ),
)


def durable_settings(conf: Any) -> dict[str, Any]:
    """Validated ``durable_*`` settings from a Celery ``app.conf`` (defaults filled in)."""
    given = {k: conf[k] for k in list(conf.keys()) if k.startswith("durable_")}
    return validate(given, SETTINGS, "Celery setting")
