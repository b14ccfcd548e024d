"""``celery durable dlq unpark [TASK_ID ...|--all|--task NAME]``: reset parked dumps.

The console's "Unpark" action.  A parked dump (restored
``durable_restore_max_attempts`` times) is rewritten with its restore count at 0,
so the beat task restores it again after ``durable_restore_backoff``.
"""

from __future__ import annotations

import click
from celery.bin.base import CeleryOption

from ..dlq.base import is_parked
from ..dlq.unpark import unpark
from ..exceptions import DurableError
from ..settings import durable_settings
from .base import DurableCommand, fail, get_app
from .dlq import open_cli_store, url_option

__all__ = ["unpark_command"]


@click.command(name="unpark", cls=DurableCommand)
@click.argument("task_ids", nargs=-1)
@click.option(
    "--all",
    "unpark_all",
    cls=CeleryOption,
    is_flag=True,
    help_group="Selection Options",
    help="Unpark every parked dump.",
)
@click.option(
    "--task",
    "task_name",
    cls=CeleryOption,
    metavar="NAME",
    help_group="Selection Options",
    help="Unpark the parked dumps of one task.",
)
@url_option
@click.pass_context
def unpark_command(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    unpark_all: bool,
    task_name: str | None,
    url: str | None,
) -> None:
    """Give parked dumps a fresh start: restore count reset to 0."""
    if sum((bool(task_ids), unpark_all, task_name is not None)) != 1:
        fail("dlq unpark: give TASK_ID..., --all or --task NAME (exactly one)")
    limit = int(durable_settings(get_app(ctx).conf)["durable_restore_max_attempts"])
    store = open_cli_store(ctx, url)
    wanted = set(task_ids)
    try:
        entries = [
            e
            for e in store.entries(task=task_name)
            if is_parked(e, limit) and (not wanted or e.task_id in wanted)
        ]
        missing = wanted - {e.task_id for e in entries}
        count = unpark(store, entries, limit)
    except DurableError as exc:
        fail(f"dlq unpark: {exc}")
    finally:
        store.close()
    click.echo(f"unparked {count} dump(s)")
    if missing:
        fail(f"dlq unpark: no parked dump for task id(s) {', '.join(sorted(missing))}")
