"""The console's filters on the command line: ``--exc``, ``--queue``, ``--search``, ``--age``.

Shared by ``dlq ls``, ``dlq export``, ``dlq purge`` and ``dlq restore`` so that
whatever the console lists, exports, purges or restores by filter, the CLI can
too (:class:`~celery_durable.dlq.summary.DumpFilter` is the one definition).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
from celery.bin.base import CeleryOption

from ..dlq.base import DumpEntry
from ..dlq.summary import AGES, DumpFilter, summarize

__all__ = ["filter_options", "matches"]

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(command: F) -> F:
    """Add the filter options; the command receives them as one ``flt: DumpFilter``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        exc: str | None,
        queue: str | None,
        search: str | None,
        age: str | None,
        **kwargs: Any,
    ) -> Any:
        flt = DumpFilter(exc=exc or "", queue=queue or "", text=search or "", age=age or "")
        return command(*args, flt=flt, **kwargs)

    group = {"cls": CeleryOption, "help_group": "Selection Options"}
    options = (
        click.option(
            "--exc", metavar="TYPE", help="Only dumps whose exception type is TYPE.", **group
        ),
        click.option("--queue", metavar="NAME", help="Only dumps taken from queue NAME.", **group),
        click.option(
            "--search",
            metavar="TEXT",
            help="Only dumps whose exception message or task id contains TEXT.",
            **group,
        ),
        click.option(
            "--age",
            type=click.Choice(list(AGES)),
            help="Only dumps that failed within (1h, 24h, 7d) or before (>1h, ...) that.",
            **group,
        ),
    )
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return cast(F, decorated)


def matches(flt: DumpFilter, entry: DumpEntry, max_attempts: int) -> bool:
    return flt.empty or flt.matches(summarize(entry), max_attempts)
