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
from typing import IO

import click
from celery.bin.base import CeleryOption
from kombu.utils.json import dumps as json_dumps
from kombu.utils.json import loads as json_loads

from ..dlq import DumpEntry, DumpStore, QuarantinedDump, is_parked, store_for_app
from ..dlq.history import restore_history
from ..dlq.summary import DumpFilter
from ..dlq.validate import entry_problem, split_valid
from ..exceptions import DurableError
from ..settings import settings_for
from .base import DurableGroup, fail, get_app
from .dlq_filter import filter_options, matches

__all__ = ["dlq", "open_cli_store", "url_option"]

url_option = click.option(
    "--url",
    cls=CeleryOption,
    default=None,
    help_group="Store Options",
    help="Dump store URL (default: the app's durable_dlq_url).",
)
# The selection options every listing command shares (``ls``, ``purge``, ``export``).
task_option = click.option(
    "--task",
    "task",
    cls=CeleryOption,
    default=None,
    help_group="Selection Options",
    help="Only dumps of this task name.",
)
parked_option = click.option(
    "--parked",
    cls=CeleryOption,
    is_flag=True,
    help_group="Selection Options",
    help="Only parked dumps (max restore attempts reached).",
)


@click.group(name="dlq", cls=DurableGroup)
def dlq() -> None:
    """Dead-letter dumps of failed tasks."""


def open_cli_store(ctx: click.Context, url: str | None) -> DumpStore:
    """The dump store for a command, failing with a one-line reason."""
    try:
        return store_for_app(get_app(ctx), url)
    except DurableError as exc:
        fail(f"cannot open the dump store: {exc}")


def _max_attempts(ctx: click.Context) -> int:
    return settings_for(get_app(ctx)).restore_max_attempts


def _when(ts: float) -> str:
    try:
        when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):  # a failure time far outside the calendar
        return repr(ts)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _read(
    store: DumpStore,
    task: str | None,
    parked_only: bool,
    limit: int,
    flt: DumpFilter | None = None,
) -> tuple[list[DumpEntry], list[QuarantinedDump]]:
    """Well-formed dumps selected, and the malformed ones (quarantined: never listed as
    dumps, exported, restored or purged)."""
    good, bad = split_valid(store.url, store.entries(task=task))
    return [
        e
        for e in good
        if (not parked_only or is_parked(e, limit)) and (flt is None or matches(flt, e, limit))
    ], bad


def _selected(
    store: DumpStore, task: str | None, parked_only: bool, limit: int, flt: DumpFilter | None = None
) -> list[DumpEntry]:
    return _read(store, task, parked_only, limit, flt)[0]


@dlq.command(name="ls")
@task_option
@click.option(
    "--json",
    "as_json",
    cls=CeleryOption,
    is_flag=True,
    help_group="Output Options",
    help="One JSON object per line.",
)
@parked_option
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
        entries, malformed = _read(store, task, parked, limit, flt)
        quarantined = store.quarantined() + malformed
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
    # Also in data["headers"]; lifted out (well-formed entries only) so it is easy to find.
    data["restore_history"] = restore_history(entry.headers)
    problem = entry_problem(entry)
    if problem is None:
        data["parked"] = is_parked(entry, _max_attempts(ctx))
    else:
        data["quarantined"] = problem
    click.echo(json_dumps(data, indent=2, sort_keys=True, default=repr))


@dlq.command(name="purge")
@parked_option
@task_option
@click.option(
    "-f",
    "--force",
    cls=CeleryOption,
    is_flag=True,
    help_group="Purging Options",
    help="Do not ask for confirmation.",
)
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
@task_option
@parked_option
@click.option(
    "-o",
    "--output",
    cls=CeleryOption,
    type=click.File("w"),
    default="-",
    help_group="Output Options",
    help="File (default: stdout).",
)
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


def _lines(source: IO[str]) -> Iterator[tuple[int, str]]:
    lineno = 0
    try:
        for lineno, line in enumerate(source, 1):
            yield lineno, line
    except UnicodeDecodeError:
        fail(f"line {lineno + 1}: not UTF-8 text; is {source.name} a JSON lines file?")


def _parse_line(lineno: int, line: str) -> DumpEntry | str | None:
    """The entry on one line, ``None`` for a line to skip, or the reason it is bad."""
    if "\0" in line:
        return f"line {lineno}: binary data, not JSON lines"
    text = line.strip()
    if not text:
        return None
    if not text.startswith("{"):
        if DROPPED_MARK not in text or "{" not in text:
            return None  # other log lines
        text = text[text.index("{", text.index(DROPPED_MARK)) :]
    try:
        data = json_loads(text)
    except ValueError as exc:
        return f"line {lineno}: not JSON: {exc}"
    if not isinstance(data, dict) or "task_id" not in data:
        return f"line {lineno}: not a dump (no task_id)"
    try:
        entry = DumpEntry.from_dict(data)
    except TypeError as exc:
        return f"line {lineno}: missing fields: {exc}"
    entry.entry_id = ""
    problem = entry_problem(entry)
    return entry if problem is None else f"line {lineno}: {problem}"


@dlq.command(name="import")
@click.argument("source", type=click.File("r", encoding="utf-8"), default="-")
@url_option
@click.pass_context
def import_(ctx: click.Context, source: IO[str], url: str | None) -> None:
    """Add dumps from JSON lines (``export`` output, or a worker log with DROPPED DUMP lines).

    Every line is checked first (JSON, field names and types); if any is bad,
    nothing is imported and the first bad line is named.
    """
    entries: list[DumpEntry] = []
    problems: list[str] = []
    for lineno, line in _lines(source):
        parsed = _parse_line(lineno, line)
        if isinstance(parsed, str):
            problems.append(parsed)
        elif parsed is not None:
            entries.append(parsed)
    if problems:
        more = f" (and {len(problems) - 1} more bad lines)" if len(problems) > 1 else ""
        fail(f"{problems[0]}{more}; nothing imported")
    store = open_cli_store(ctx, url)
    try:
        for start in range(0, len(entries), 1000):
            store.write(entries[start : start + 1000])
    except DurableError as exc:
        fail(f"cannot write to {store.url}: {exc}")
    click.echo(f"Imported {len(entries)} dumps.")
