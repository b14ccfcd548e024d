"""``celery durable dlq restore [TASK_ID ...|--all|--task NAME] [--dry-run] [--force]``.

A manual restore: it ignores the backoff and restores parked entries too (an
operator asking for a task by id or name has decided), but it honours the
per-queue rate control unless ``--force``.  It exits non-zero when a named task
id has no dump, when a queue held entries back, or when the broker refused.
"""

from __future__ import annotations

from typing import Any

import click
from celery.bin.base import CeleryOption

from ..dlq.base import DumpEntry
from ..dlq.summary import DumpFilter
from .base import DurableCommand, fail, get_app
from .dlq import open_cli_store, url_option
from .dlq_filter import filter_options, matches

__all__ = ["restore_command"]


def _selector(
    task_ids: tuple[str, ...],
    task_name: str | None,
    seen: set[str],
    flt: DumpFilter,
    max_attempts: int,
) -> Any:
    wanted = set(task_ids)

    def select(entry: DumpEntry) -> bool:
        if wanted:
            if entry.task_id in wanted:
                seen.add(entry.task_id)
                return True
            return False
        if task_name is not None and entry.task_name != task_name:
            return False
        return matches(flt, entry, max_attempts)

    return select


@click.command(name="restore", cls=DurableCommand)
@click.argument("task_ids", nargs=-1)
@click.option(
    "--all",
    "restore_all",
    cls=CeleryOption,
    is_flag=True,
    help_group="Selection Options",
    help="Restore every dump.",
)
@click.option(
    "--task",
    "task_name",
    cls=CeleryOption,
    metavar="NAME",
    help_group="Selection Options",
    help="Restore the dumps of one task name.",
)
@click.option(
    "--dry-run",
    cls=CeleryOption,
    is_flag=True,
    help_group="Restore Options",
    help="Print what would be restored; change nothing.",
)
@click.option(
    "--force",
    cls=CeleryOption,
    is_flag=True,
    help_group="Restore Options",
    help="Ignore the per-queue rate control.",
)
@filter_options
@url_option
@click.pass_context
def restore_command(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    restore_all: bool,
    task_name: str | None,
    dry_run: bool,
    force: bool,
    url: str | None,
    flt: DumpFilter,
) -> None:
    """Republish dumped tasks now (ignores backoff; parked entries included).

    ``--all`` or ``--task`` may be narrowed by the filter options.
    """
    if sum((bool(task_ids), restore_all, task_name is not None)) != 1:
        fail("dlq restore: give TASK_ID..., --all or --task NAME (exactly one)")
    from ..restore.runner import RestoreOptions, restore

    app = get_app(ctx)
    seen: set[str] = set()
    # Errors (a bad setting, the broker, the lock) are one line at the command boundary.
    options = RestoreOptions.from_app(
        app, batch=None, ignore_backoff=True, include_parked=True, force=force, trigger="cli"
    )
    store = open_cli_store(ctx, url)
    try:
        report = restore(
            app,
            store,
            options,
            select=_selector(task_ids, task_name, seen, flt, options.max_attempts),
            dry_run=dry_run,
        )
    finally:
        store.close()
    if report.busy:
        fail(f"dlq restore: another restore run holds the lock for {store.url}; try again")
    if dry_run:
        for m in report.planned:
            parked = ", parked" if options.max_attempts <= m.entry.restores else ""
            click.echo(
                f"{m.entry.task_id}  {m.entry.task_name}  -> {m.queue}"
                f"  (restore #{m.entry.restores + 1}{parked})"
            )
        click.echo(f"would restore {len(report.planned)} dump(s)")
    else:
        queues = ", ".join(f"{q}: {n}" for q, n in sorted(report.by_queue.items()))
        click.echo(f"restored {report.restored} dump(s)" + (f" ({queues})" if queues else ""))
    if report.quarantined:
        _, task_id, reason = report.quarantined[0]
        more = f" and {len(report.quarantined) - 1} more" if len(report.quarantined) > 1 else ""
        click.echo(
            f"quarantined, not restored: task {task_id}: {reason}{more} (`dlq ls` lists them)",
            err=True,
        )
    missing = sorted(set(task_ids) - seen)
    if missing:
        fail(f"dlq restore: no dump for task id(s) {', '.join(missing)}")
    if report.postponed:
        held = ", ".join(f"{q}: {n}" for q, n in sorted(report.postponed.items()))
        if dry_run:
            click.echo(f"held back by rate control: {held} (use --force)")
            return
        fail(
            f"dlq restore: held back, queue above {options.allow_rate:.0%} of "
            f"{options.capacity} messages ({held}); retry later or use --force"
        )
