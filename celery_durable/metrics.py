"""Prometheus metrics, all named ``celery_durable_*``.

Every metric lives here so the names are reviewed in one place and documented
in ``docs/metrics.md``.  In a prefork worker set ``PROMETHEUS_MULTIPROC_DIR``
before the worker starts (prometheus-client's multiprocess mode); gauges then
declare how the per-process values are combined.  ``durable_metrics_port``
starts :func:`start_exporter` in the worker's main process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

__all__ = ["start_exporter"]

# -- producer side: the durable transport ------------------------------------
SPILLED = Counter(
    "celery_durable_spilled", "Messages written to the local spill store.", ["reason"]
)
DRAINED = Counter("celery_durable_drained", "Spilled messages forwarded to the broker.")
SPILL_FULL = Counter(
    "celery_durable_spill_full", "Publishes refused because the spill store was full."
)
BUFFERED_BYTES = Gauge(
    "celery_durable_buffered_bytes",
    "Bytes held in the in-memory publish buffer (buffered mode).",
    multiprocess_mode="livesum",
)
BACKLOG_RECORDS = Gauge(
    "celery_durable_backlog_records",
    "Records waiting in spill stores owned by this process.",
    multiprocess_mode="livesum",
)
BACKLOG_BYTES = Gauge(
    "celery_durable_backlog_bytes",
    "Bytes waiting in spill stores owned by this process.",
    multiprocess_mode="livesum",
)
BREAKER_OPEN = Gauge(
    "celery_durable_breaker_open",
    "1 while the publish circuit breaker is open (broker considered down).",
    multiprocess_mode="livemax",
)
DRAIN_LAG = Gauge(
    "celery_durable_drain_lag_seconds",
    "Age of the oldest record still waiting in the spill store.",
    multiprocess_mode="livemax",
)
CORRUPT_RECORDS = Counter(
    "celery_durable_corrupt_records",
    "Stored records that failed their checksum or decoding and were quarantined.",
    ["store"],
)
STORES_QUARANTINED = Counter(
    "celery_durable_spill_stores_quarantined",
    "Spill stores with unreadable data moved to spill_dir/quarantine/ (never deleted).",
)
RECORDS_LOST = Counter(
    "celery_durable_spill_records_lost",
    "Spilled records the store's counters expected that LevelDB could not read "
    "(a damaged table or log).",
)
DAMAGED_OPENS = Counter(
    "celery_durable_spill_damaged_opens",
    "Spill store opens where LevelDB dropped unreadable log data (see the store's DAMAGED note).",
)

# -- worker side: dead-letter capture ----------------------------------------
DUMPED = Counter("celery_durable_dumped", "Failed tasks dumped.", ["task"])
DUMP_BYTES = Counter("celery_durable_dump_bytes", "Bytes of dumps written.")
DUMP_FLUSHES = Counter("celery_durable_dump_flushes", "Dump buffer flushes.")
DUMP_FLUSH_DURATION = Histogram(
    "celery_durable_dump_flush_duration_seconds", "Time to write one dump flush."
)
DUMP_WRITE_ERRORS = Counter(
    "celery_durable_dump_write_errors", "Dump flushes that failed (retried later)."
)
DUMPS_DROPPED = Counter(
    "celery_durable_dumps_dropped",
    "Dumps removed by the store's retention bounds (reason: max_age, max_entries, max_bytes).",
    ["reason"],
)

# -- restore -----------------------------------------------------------------
RESTORED = Counter("celery_durable_restored", "Dumped tasks republished.", ["queue"])
POSTPONED = Counter(
    "celery_durable_postponed", "Restores postponed because the queue was too full.", ["queue"]
)
PARKED = Counter("celery_durable_parked", "Dumps parked after max restore attempts.")
RESTORE_ERRORS = Counter("celery_durable_restore_errors", "Restores that failed.")
RESTORE_LAG = Gauge(
    "celery_durable_restore_lag_seconds",
    "Age of the oldest eligible dump at the end of a restore run.",
    multiprocess_mode="livemax",
)


def start_exporter(port: int, addr: str = "0.0.0.0") -> None:  # "" fails: gaierror
    """Serve ``/metrics`` on ``port``; aggregates worker children in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr=addr, registry=registry)
    else:
        start_http_server(port, addr=addr)
