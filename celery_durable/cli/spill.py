"""``celery durable spill ls|drain|check``.

Every command takes ``--spill-dir`` through :func:`spill_dir_option`; the
default is ``$CELERY_DURABLE_DIR/spill`` (:func:`default_spill_dir`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ..options import default_dir
from ..spill import CheckReport, StoreInfo, StoreLocked, check, list_stores
from .base import DurableGroup, fail, get_app

F = TypeVar("F", bound=Callable[..., Any])


def default_spill_dir() -> Path:
    return default_dir() / "spill"


def spill_dir_option(func: F) -> F:
    """``--spill-dir PATH`` (default ``$CELERY_DURABLE_DIR/spill``), passed as ``spill_dir``."""
    return click.option(
        "--spill-dir",
        "spill_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Directory of the spill stores [default: $CELERY_DURABLE_DIR/spill].",
    )(func)


def resolve_spill_dir(spill_dir: Path | None) -> Path:
    """``--spill-dir`` if given, else the app's broker's store directory.

    The transport keeps one sub-directory per broker under ``spill_dir``
    (``spill_dir/<scheme-host-port-db-hash>``); with ``celery -A proj`` we find
    it from the app's broker URL and transport options, as the producers do.
    """
    if spill_dir is not None:
        return spill_dir
    from ..transport.appconf import durable_config

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        config = durable_config(get_app(ctx))
        if config is not None:
            return config.store_dir
    return default_spill_dir()


@click.group(name="spill", cls=DurableGroup)
def spill() -> None:
    """Local spill stores of the durable transport."""


def _cell(value: int | None) -> str:
    return "?" if value is None else str(value)


def format_table(infos: Sequence[StoreInfo]) -> str:
    """The ``spill ls`` table: one store per row."""
    header = ("STORE", "HOST", "PID", "ALIVE", "RECORDS", "BYTES", "QUARANTINED", "OLDEST", "LOST")
    now = time.time()
    rows = [header]
    for info in infos:
        alive = "yes" if info.alive else "no"
        if info.error:
            alive += " (unreadable)"
        name = info.path.name
        if info.quarantine is not None:
            name = f"{info.path.parent.name}/{name}"
        rows.append(
            (
                name,
                info.hostname,
                _cell(info.pid),
                alive,
                _cell(info.records),
                _cell(info.bytes),
                _cell(info.quarantined),
                "-" if info.oldest_created is None else f"{now - info.oldest_created:.0f}s",
                _cell(info.lost) if info.lost or info.lost is None else "0",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


@spill.command(name="ls")
@spill_dir_option
def ls(spill_dir: Path | None) -> None:
    """List the stores under the spill directory with owner, liveness and backlog.

    A store whose owner is alive is locked, so its backlog shows as "?".
    Every directory that looks like a store is listed, readable or not, and
    the stores moved to quarantine/ (unreadable data: never deleted) last.
    """
    root = resolve_spill_dir(spill_dir)
    infos = list_stores(root)
    if not infos:
        click.echo(f"no spill stores under {root}")
        return
    click.echo(format_table(infos))
    active = [i for i in infos if i.quarantine is None]
    waiting = sum(i.records or 0 for i in active if not i.alive)
    orphans = sum(1 for i in active if not i.alive)
    unknown = sum(1 for i in active if not i.alive and i.records is None)
    if orphans:
        click.echo(
            f"{orphans} store(s) without a live owner hold {waiting} record(s)"
            + (f" ({unknown} unreadable: not counted)" if unknown else "")
        )
    for info in infos:
        if info.damaged:
            click.echo(f"DAMAGED {info.path}: {damage_text(info)}")


def damage_text(info: StoreInfo) -> str:
    """Why a listed store is damaged, in one line."""
    parts = []
    if info.quarantine is not None:
        parts.append(f"quarantined ({info.quarantine})")
    if info.error:
        parts.append(info.error.replace(f"spill store {info.path} ", ""))
    elif info.lost:
        parts.append(f"{info.lost} records lost")
    parts.append("run: celery durable spill check --repair " + str(info.path))
    return "; ".join(parts)


def describe(report: CheckReport) -> str:
    """One line per checked store."""
    state = "ok" if report.ok else "PROBLEMS"
    text = (
        f"{report.path}: {state}: {report.records} records, {report.bytes} bytes, "
        f"{report.corrupt} corrupt, {report.quarantined} quarantined"
    )
    if report.meta_records is not None and (
        report.meta_records != report.records or report.meta_bytes != report.bytes
    ):
        text += f"; counters said {report.meta_records} records, {report.meta_bytes} bytes"
    if report.missing:
        bound = "" if report.counters_known else "up to "
        what = "the repair recovered" if report.repaired else "readable:"
        text += (
            f"; {bound}{report.missing} records LOST ({what} {report.records + report.corrupt}"
            f" of {report.meta_records})"
        )
    if report.lost:
        text += f"; {report.lost} records lost earlier"
    if report.repaired:
        text += "; repaired"
    for error in report.errors:
        text += f"; {error}"
    return text


@spill.command(name="check")
@spill_dir_option
@click.option("--repair", is_flag=True, help="Run LevelDB repair, quarantine bad records, recount.")
@click.argument("stores", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
def check_cmd(spill_dir: Path | None, repair: bool, stores: tuple[Path, ...]) -> None:
    """Check (and with --repair, fix) stores: every record decodes, counters match.

    Without STORES, checks every store under the spill directory whose owner is
    dead (quarantined ones too); stores in use by a live process are skipped.
    Records the counters expect that no readable key holds are reported as
    LOST, before and after a repair: a repair never makes a loss look healthy.
    """
    explicit = bool(stores)
    paths = list(stores) or [i.path for i in list_stores(resolve_spill_dir(spill_dir))]
    if not paths:
        click.echo(f"no spill stores under {resolve_spill_dir(spill_dir)}")
        return
    bad = skipped = 0
    for path in paths:
        try:
            report = check(path, repair=repair)
        except StoreLocked as exc:
            if explicit:
                fail(str(exc))
            click.echo(f"{path}: skipped, in use by a live process")
            skipped += 1
            continue
        click.echo(describe(report))
        bad += not report.ok
    if bad:
        hint = "" if repair else "; run with --repair"
        fail(f"{bad} of {len(paths) - skipped} spill store(s) have problems{hint}")


def _counter(name: str) -> int:
    from prometheus_client import REGISTRY

    return int(REGISTRY.get_sample_value(name) or 0)


@spill.command(name="drain")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the backlog to reach the broker.")  # fmt: skip
@click.pass_context
def drain(ctx: click.Context, timeout: float) -> None:
    """Adopt the stores of dead processes and forward their backlog to the broker now.

    Stores with unreadable data are never deleted: adoption moves them to
    quarantine/.  They are listed, and the command exits non-zero while any is
    there (what LevelDB can still read: spill check --repair, see the runbook).
    """
    from ..transport.appconf import drain_orphans, durable_config

    app = get_app(ctx)
    config = durable_config(app)
    if config is None:
        fail("the app's broker_url does not use the durable transport (durable+redis://)")
    before = (
        _counter("celery_durable_drained_total"),
        _counter("celery_durable_spill_records_lost_total"),
    )
    found, left = drain_orphans(app, timeout)
    if left:
        fail(f"drained {found - left} of {found} spilled messages; {left} left (broker down?)")
    drained = _counter("celery_durable_drained_total") - before[0]
    lost = _counter("celery_durable_spill_records_lost_total") - before[1]
    click.echo(
        f"drained {drained} spilled message(s)"
        + (f"; {lost} counted but unreadable (lost)" if lost else "")
    )
    damaged = [i for i in list_stores(config.store_dir) if i.damaged and not i.alive]
    for info in damaged:
        click.echo(f"DAMAGED {info.path}: {damage_text(info)}")
    if damaged:
        fail(f"{len(damaged)} spill store(s) with unreadable data kept aside (never deleted)")
