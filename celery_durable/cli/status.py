"""``celery durable status``: backlog, breaker state, dump counts, parked."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from ..exceptions import DurableError
from ..spill import list_stores
from . import durable, fail, get_app


def _age(created: float | None) -> float | None:
    return None if created is None else round(time.time() - created, 1)


def _broker_reachable(url: str, timeout: float) -> bool:
    """Probe the inner broker now (the breaker itself lives in each producer process)."""
    from kombu import Connection

    conn = Connection(url, connect_timeout=timeout, transport_options={"socket_timeout": timeout})
    try:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        return True
    except Exception:  # any failure to connect means "not reachable" here
        return False
    finally:
        conn.release()


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
    reachable = _broker_reachable(config.inner_url, config.options.publish_timeout)
    return {
        "broker": config.broker_url,
        "spill_dir": str(config.store_dir),
        "publish_mode": config.options.publish_mode,
        "breaker": "closed" if reachable else "open",
        "stores": stores,
        "backlog": sum(s["records"] or 0 for s in stores if s["quarantine"] is None),
        "damaged": sum(1 for info in infos if info.damaged),
    }


def _dump_status(app: Any) -> dict[str, Any]:
    from ..dlq.base import is_parked
    from ..settings import durable_settings
    from .dlq import open_cli_store

    settings = durable_settings(app.conf)
    store = open_cli_store(click.get_current_context(), None)
    try:
        entries = list(store.entries())
        parked = sum(is_parked(e, settings["durable_restore_max_attempts"]) for e in entries)
        oldest = min((e.failed_at for e in entries), default=None)
        return {
            "url": store.url,
            "dumps": len(entries),
            "parked": parked,
            "oldest_age_seconds": _age(oldest),
            "quarantined": len(store.quarantined()),
        }
    finally:
        store.close()


@durable.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Backlog per spill store, breaker state, dump and parked counts."""
    app = get_app(ctx)
    try:
        spill, dumps = _spill_status(app), _dump_status(app)
        report = {"spill": spill, "dlq": dumps}
    except DurableError as exc:
        fail(f"status: {exc}")
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    if spill is None:
        click.echo("spill: the app's broker does not use the durable transport")
    else:
        click.echo(
            f"spill: broker {spill['broker']} breaker {spill['breaker']} "
            f"mode {spill['publish_mode']} backlog {spill['backlog']} records"
        )
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
