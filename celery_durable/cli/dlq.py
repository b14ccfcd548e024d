"""``celery durable dlq ls|show|purge|export|import`` (``restore`` lives in ``dlq_restore``).

Every command reads the store the app's settings name (``durable_dlq_url``);
``--url`` overrides it.  Quarantined dumps (another format version, damaged
records) are reported by ``ls`` and never deleted by ``purge``.  ``export`` and
``import`` speak JSON lines, one :class:`~celery_durable.dlq.base.DumpEntry` per
line; ``import`` also reads the ``dlq: DROPPED DUMP ... {json}`` lines a worker
logs when it could not write a dump, so those can be recovered from a log file.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import IO, Any

import click
from kombu.utils.json import dumps as json_dumps
from kombu.utils.json import loads as json_loads

from ..dlq import DumpEntry, DumpStore, is_parked, store_for_app
from ..dlq.summary import DumpFilter
from ..exceptions import DurableError
from ..settings import durable_settings
from . import durable, fail, get_app
from .dlq_filter import filter_options, matches

__all__ = ["dlq", "open_cli_store"]

url_option = click.option(
    "--url", default=None, help="Dump store URL (default: the app's durable_dlq_url)."
)


@durable.group(name="dlq")
def dlq() -> None:
    """Dead-letter dumps of failed tasks."""


def open_cli_store(ctx: click.Context, url: str | None) -> DumpStore:
    """The dump store for a command, failing with a one-line reason."""
    try:
        return store_for_app(get_app(ctx), url)
    except DurableError as exc:
        fail(f"cannot open the dump store: {exc}")


def _max_attempts(ctx: click.Context) -> int:
    return int(durable_settings(get_app(ctx).conf)["durable_restore_max_attempts"])


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def _selected(
    store: DumpStore, task: str | None, parked_only: bool, limit: int, flt: DumpFilter | None = None
) -> list[DumpEntry]:
    return [
        e
        for e in store.entries(task=task)
        if (not parked_only or is_parked(e, limit)) and (flt is None or matches(flt, e, limit))
    ]


@dlq.command(name="ls")
@click.option("--task", "task", default=None, help="Only dumps of this task name.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--parked", is_flag=True, help="Only parked dumps (max restore attempts reached).")
@filter_options
@url_option
@click.pass_context
def ls(
    ctx: click.Context,
    task: str | None,
    as_json: bool,
    parked: bool,
    url: str | None,
    flt: DumpFilter,
) -> None:
    """List dumped tasks, oldest first, and any quarantined dumps."""
    store = open_cli_store(ctx, url)
    limit = _max_attempts(ctx)
    try:
        entries = _selected(store, task, parked, limit, flt)
        quarantined = store.quarantined()
    except DurableError as exc:
        fail(f"cannot read {store.url}: {exc}")
    if as_json:
        for entry in entries:
            data = entry.to_dict()
            data["parked"] = is_parked(entry, limit)
            click.echo(json_dumps(data))
        for found in quarantined:
            click.echo(json_dumps({"quarantined": found.location, "reason": found.reason}))
        return
    for entry in entries:
        flag = "  PARKED" if is_parked(entry, limit) else ""
        click.echo(
            f"{_when(entry.failed_at)}  {entry.task_id}  {entry.task_name}  "
            f"{entry.exc_type}: {entry.exc_message[:60]}  restores={entry.restores}  "
            f"host={entry.host or entry.hostname}{flag}"
        )
    parked_count = sum(1 for e in entries if is_parked(e, limit))
    click.echo(f"{len(entries)} dumps, {parked_count} parked, {len(quarantined)} quarantined")
    for found in quarantined:
        click.echo(f"QUARANTINED {found.location}: {found.reason}")


@dlq.command(name="show")
@click.argument("task_id")
@url_option
@click.pass_context
def show(ctx: click.Context, task_id: str, url: str | None) -> None:
    """Everything dumped about TASK_ID (its newest dump), as JSON."""
    store = open_cli_store(ctx, url)
    try:
        entry = store.get(task_id)
    except DurableError as exc:
        fail(f"cannot read {store.url}: {exc}")
    if entry is None:
        fail(f"no dump of task {task_id} in {store.url}")
    data = entry.to_dict()
    data["parked"] = is_parked(entry, _max_attempts(ctx))
    click.echo(json_dumps(data, indent=2, sort_keys=True))


@dlq.command(name="purge")
@click.option("--parked", is_flag=True, help="Only parked dumps.")
@click.option("--task", "task", default=None, help="Only dumps of this task name.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@filter_options
@url_option
@click.pass_context
def purge(
    ctx: click.Context,
    parked: bool,
    task: str | None,
    force: bool,
    url: str | None,
    flt: DumpFilter,
) -> None:
    """Delete dumps for good (quarantined dumps are never deleted)."""
    store = open_cli_store(ctx, url)
    try:
        entries = _selected(store, task, parked, _max_attempts(ctx), flt)
    except DurableError as exc:
        fail(f"cannot read {store.url}: {exc}")
    if not entries:
        click.echo("No dumps to purge.")
        return
    what = f"{len(entries)} {'parked ' if parked else ''}dumps from {store.url}"
    if not force and not click.confirm(f"Delete {what}?", default=False):
        fail("aborted")
    try:
        removed = store.delete(e.entry_id for e in entries)
    except DurableError as exc:
        fail(f"cannot delete from {store.url}: {exc}")
    click.echo(f"Purged {removed} dumps.")


@dlq.command(name="export")
@click.option("--task", "task", default=None, help="Only dumps of this task name.")
@click.option("--parked", is_flag=True, help="Only parked dumps.")
@click.option("-o", "--output", type=click.File("w"), default="-", help="File (default: stdout).")
@filter_options
@url_option
@click.pass_context
def export(
    ctx: click.Context,
    task: str | None,
    parked: bool,
    output: IO[str],
    url: str | None,
    flt: DumpFilter,
) -> None:
    """Write dumps as JSON lines (they stay in the store)."""
    store = open_cli_store(ctx, url)
    count = 0
    try:
        for entry in _selected(store, task, parked, _max_attempts(ctx), flt):
            output.write(json_dumps(entry.to_dict()) + "\n")
            count += 1
    except DurableError as exc:
        fail(f"cannot read {store.url}: {exc}")
    click.echo(f"Exported {count} dumps.", err=True)


DROPPED_MARK = "DROPPED DUMP"


def _parse_lines(source: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(source, 1):
        text = line.strip()
        if not text:
            continue
        if not text.startswith("{"):
            if DROPPED_MARK not in text or "{" not in text:
                continue  # other log lines
            text = text[text.index("{", text.index(DROPPED_MARK)) :]
        try:
            data = json_loads(text)
        except ValueError as exc:
            fail(f"line {lineno}: not JSON: {exc}")
        if not isinstance(data, dict) or "task_id" not in data:
            fail(f"line {lineno}: not a dump (no task_id)")
        yield lineno, data


@dlq.command(name="import")
@click.argument("source", type=click.File("r"), default="-")
@url_option
@click.pass_context
def import_(ctx: click.Context, source: IO[str], url: str | None) -> None:
    """Add dumps from JSON lines (``export`` output, or a worker log with DROPPED DUMP lines)."""
    store = open_cli_store(ctx, url)
    entries: list[DumpEntry] = []
    for lineno, data in _parse_lines(source):
        try:
            entry = DumpEntry.from_dict(data)
        except TypeError as exc:
            fail(f"line {lineno}: missing fields: {exc}")
        entry.entry_id = ""
        entries.append(entry)
    try:
        for start in range(0, len(entries), 1000):
            store.write(entries[start : start + 1000])
    except DurableError as exc:
        fail(f"cannot write to {store.url}: {exc}")
    click.echo(f"Imported {len(entries)} dumps.")
