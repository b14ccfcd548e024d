"""The overview page's numbers: spill backlogs and broker probe, dumps, drops, last run."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

from ..dlq.base import DumpStore
from ..dlq.retention import dropped_counts
from ..dlq.summary import DumpSummary

__all__ = ["dump_counts", "dump_overview", "producer_metrics", "spill_overview"]

#: Producer gauges the overview shows when their multiprocess files are readable.
PRODUCER_GAUGES = (
    "celery_durable_breaker_open",
    "celery_durable_backlog_records",
    "celery_durable_drain_lag_seconds",
)

PROBE_TTL = 5.0
_probe_lock = threading.Lock()
_probe: dict[str, tuple[float, bool]] = {}


def _reachable(url: str, timeout: float) -> bool:
    """Probe the inner broker now (at most every PROBE_TTL seconds per URL)."""
    with _probe_lock:
        cached = _probe.get(url)
        if cached and time.monotonic() - cached[0] < PROBE_TTL:
            return cached[1]
    from kombu import Connection

    conn = Connection(url, connect_timeout=timeout, transport_options={"socket_timeout": timeout})
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        ok = True
    except Exception:  # any failure to connect is "unreachable" here
        ok = False
    finally:
        conn.release()
    with _probe_lock:
        _probe[url] = (time.monotonic(), ok)
    return ok


def spill_overview(app: Any) -> dict[str, Any] | None:
    """Spill stores of this host with backlog and oldest record; None without the transport.

    The breaker lives in each producer process; what the console can see is a live
    probe of the broker, and a store owned by a live process (LevelDB lock held)
    whose backlog only its owner and its metrics know.
    """
    from ..spill import list_stores
    from ..transport.appconf import durable_config

    config = durable_config(app)
    if config is None:
        return None
    now = time.time()
    stores = [
        {
            "name": info.path.name,
            "host": info.hostname,
            "pid": info.pid,
            "alive": info.alive,
            "records": info.records,
            "bytes": info.bytes,
            "oldest_age": None if info.oldest_created is None else now - info.oldest_created,
            "error": info.error,
        }
        for info in list_stores(config.store_dir)
    ]
    try:
        producers = producer_metrics()
    except Exception:  # unreadable metric files must not break the page
        producers = None
    return {
        "producers": producers,
        "broker": config.broker_url,
        "mode": config.options.publish_mode,
        "reachable": _reachable(config.inner_url, config.options.publish_timeout),
        "stores": stores,
        "backlog": sum(s["records"] or 0 for s in stores),
    }


def producer_metrics(path: str | None = None) -> dict[str, float] | None:
    """The producers' breaker, backlog and drain lag, from prometheus-client's
    multiprocess files (``PROMETHEUS_MULTIPROC_DIR``, shared with the producers on
    this host); None when there are none to read."""
    path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path or not os.path.isdir(path):
        return None
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    found: dict[str, float] = {}
    for metric in registry.collect():
        if metric.name in PRODUCER_GAUGES:
            for sample in metric.samples:
                found[metric.name] = max(found.get(metric.name, sample.value), sample.value)
    return found or None


def dump_counts(rows: list[DumpSummary], max_attempts: int) -> dict[str, Any]:
    """Counts derived from the list alone (the console keeps them while it is unchanged)."""
    return {
        "total": len(rows),
        "by_task": Counter(s.task_name for s in rows).most_common(20),
        "by_exc": Counter(s.exc_type for s in rows).most_common(20),
        "parked": sum(1 for s in rows if s.restores >= max_attempts),
        "oldest": min((s.failed_at for s in rows), default=None),
    }


def dump_overview(store: DumpStore, counts: dict[str, Any], quarantined: int) -> dict[str, Any]:
    get_note = getattr(store, "get_note", None)
    return {
        **counts,
        "quarantined": quarantined,
        "dropped": dropped_counts(store),
        "last_run": get_note("last-restore") if get_note is not None else None,
    }
