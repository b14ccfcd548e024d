"""``celery durable status``: backlog, broker probe, producers' breakers, dump counts, parked.

Two different things tell whether the broker is up, and ``status`` shows both:

* the **probe**: this command connects to the inner broker now (one attempt,
  ``publish_timeout``).  It says whether the broker answers *this* host at
  *this* moment, nothing about any producer;
* the **breakers**: each producer process has its own circuit breaker
  (``celery_durable_breaker_open``).  ``status`` can read them only where the
  producers write Prometheus multiprocess files (``PROMETHEUS_MULTIPROC_DIR``,
  set for this command too) on this host; elsewhere they are unknown.

``--json`` keeps the key ``breaker`` for compatibility: it always was the
probe's result (``closed`` = reachable, ``open`` = not); read ``probe`` and
``producer_breakers`` instead.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from typing import Any

import click
from celery.bin.base import CeleryOption

from ..dlq.validate import split_valid
from ..spill import list_stores
from .base import DurableCommand, get_app

__all__ = ["producer_breakers", "status"]

logger = logging.getLogger(__name__)

BREAKER_METRIC = "celery_durable_breaker_open"


def _age(created: float | None) -> float | None:
    return None if created is None else round(time.time() - created, 1)


def _broker_reachable(url: str, timeout: float, options: dict[str, Any] | None = None) -> bool:
    """Probe the inner broker now (one connection attempt)."""
    from kombu import Connection

    # The inner transport's options too: a Sentinel connection needs master_name.
    topts = {**(options or {}), "socket_timeout": timeout}
    conn = Connection(url, connect_timeout=timeout, transport_options=topts)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
        return True
    except Exception:  # any failure to connect means "not reachable" here
        return False
    finally:
        conn.release()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def producer_breakers(path: str | None = None) -> dict[str, Any] | None:
    """Breaker state of this host's live producer processes, from their metrics files.

    ``None`` when no Prometheus multiprocess directory is configured (the
    breakers then live only in each producer's memory).
    """
    path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    if path is None or not os.path.isdir(path):
        return None
    from prometheus_client.multiprocess import MultiProcessCollector

    try:
        found = MultiProcessCollector._read_metrics(glob.glob(os.path.join(path, "gauge_*.db")))
    except Exception as exc:  # a half-written or foreign file: say so, do not fail status
        logger.debug("status: cannot read metrics in %s", path, exc_info=True)
        return {"metrics_dir": path, "error": repr(exc), "processes": [], "open": 0, "closed": 0}
    states: dict[int, bool] = {}
    metric = found.get(BREAKER_METRIC)
    for sample in metric.samples if metric is not None else ():
        pid_text = dict(sample.labels).get("pid", "")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or not _pid_alive(pid):
            continue  # this command's own file, or a process that died without cleaning up
        states[pid] = states.get(pid, False) or sample.value >= 1
    processes = [{"pid": pid, "open": is_open} for pid, is_open in sorted(states.items())]
    opened = sum(1 for p in processes if p["open"])
    return {
        "metrics_dir": path,
        "processes": processes,
        "open": opened,
        "closed": len(processes) - opened,
    }


def _spill_status(app: Any) -> dict[str, Any] | None:
    from ..transport.appconf import durable_config

    config = durable_config(app)
    if config is None:
        return None
    stores = []
    infos = list_stores(config.store_dir)
    for info in infos:
        stores.append(
            {
                "store": info.path.name,
                "host": info.hostname,
                "pid": info.pid,
                "alive": info.alive,
                "records": info.records,
                "bytes": info.bytes,
                "quarantined": info.quarantined,
                "oldest_age_seconds": _age(info.oldest_created),
                "error": info.error,
                "lost": info.lost,
                "quarantine": info.quarantine,
            }
        )
    reachable = _broker_reachable(
        config.inner_url, config.options.publish_timeout, config.inner_options
    )
    return {
        "broker": config.broker_url,
        "spill_dir": str(config.store_dir),
        "publish_mode": config.options.publish_mode,
        "probe": "reachable" if reachable else "unreachable",
        # Deprecated: the probe's result under its old, misleading name.
        "breaker": "closed" if reachable else "open",
        "producer_breakers": producer_breakers(),
        "stores": stores,
        "backlog": sum(s["records"] or 0 for s in stores if s["quarantine"] is None),
        "damaged": sum(1 for info in infos if info.damaged),
    }


def _dump_status(app: Any) -> dict[str, Any]:
    from ..dlq.base import is_parked
    from ..dlq.retention import dropped_counts
    from ..settings import settings_for
    from .dlq import open_cli_store

    max_attempts = settings_for(app).restore_max_attempts
    store = open_cli_store(click.get_current_context(), None)
    try:
        entries, malformed = split_valid(store.url, store.entries())
        parked = sum(is_parked(e, max_attempts) for e in entries)
        oldest = min((e.failed_at for e in entries), default=None)
        return {
            "url": store.url,
            "dumps": len(entries),
            "parked": parked,
            "oldest_age_seconds": _age(oldest),
            "quarantined": len(store.quarantined()) + len(malformed),
            "dropped": dropped_counts(store),
        }
    finally:
        store.close()


def _breakers_line(breakers: dict[str, Any] | None) -> str:
    if breakers is None:
        return "producer breakers: unknown (no PROMETHEUS_MULTIPROC_DIR)"
    if breakers.get("error"):
        return f"producer breakers: unknown ({breakers['error']})"
    if not breakers["processes"]:
        return f"producer breakers: no live producer in {breakers['metrics_dir']}"
    pids = ", ".join(str(p["pid"]) for p in breakers["processes"] if p["open"])
    return f"producer breakers: {breakers['open']} open, {breakers['closed']} closed" + (
        f" (open: pid {pids})" if pids else ""
    )


@click.command(name="status", cls=DurableCommand)
@click.option("--json", "as_json", cls=CeleryOption, is_flag=True, help_group="Output Options",
              help="Print one JSON object.")  # fmt: skip
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Backlog per spill store, broker probe, producers' breakers, dump and parked counts."""
    app = get_app(ctx)
    spill, dumps = _spill_status(app), _dump_status(app)
    report = {"spill": spill, "dlq": dumps}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    if spill is None:
        click.echo("spill: the app's broker does not use the durable transport")
    else:
        click.echo(
            f"spill: broker {spill['broker']} probe {spill['probe']} "
            f"mode {spill['publish_mode']} backlog {spill['backlog']} records"
        )
        click.echo(f"  {_breakers_line(spill['producer_breakers'])}")
        click.echo(f"  dir {spill['spill_dir']}")
        for s in spill["stores"]:
            alive = "alive" if s["alive"] else "dead (adoptable)"
            if s["quarantine"] is not None:
                alive = "QUARANTINED (unreadable data, never deleted)"
            elif s["error"] or s["lost"]:
                alive += ", DAMAGED"
            age = "" if s["oldest_age_seconds"] is None else f", oldest {s['oldest_age_seconds']} s"
            lost = f", {s['lost']} lost" if s["lost"] else ""
            click.echo(
                f"  {s['store']}: {alive}, {s['records']} records, {s['bytes']} bytes{age}{lost}"
            )
            if s["error"]:
                click.echo(f"    {s['error']}")
    click.echo(
        f"dlq: {dumps['url']} dumps {dumps['dumps']} parked {dumps['parked']} "
        f"quarantined {dumps['quarantined']} oldest {dumps['oldest_age_seconds']} s"
    )
    dropped = ", ".join(f"{reason} {n}" for reason, n in dumps["dropped"].items())
    click.echo(f"  dropped by retention: {dropped}")
