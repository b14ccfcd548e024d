"""``celery -A proj durable ...``: inspect, drain, restore and purge.

Registered through the ``celery.commands`` entry point
(``durable = "celery_durable.cli:durable"``).  Each command group lives in its own
module (``status``, ``spill``, ``dlq`` with ``dlq_restore`` and ``dlq_unpark``,
``web``) and is attached below
with ``add_command``; the shared command classes and the one-line error boundary
are in :mod:`.base`.  Every command exits non-zero with a one-line reason on
failure.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from celery.bin.base import CLIContext, handle_preload_options

from . import dlq, dlq_restore, dlq_unpark, spill, status, web
from .base import DurableGroup, fail, get_app

__all__ = ["durable", "fail", "get_app"]


def _cli_context(f: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``ctx.obj`` Celery's ``CLIContext`` when run outside ``celery`` (tests, scripts)."""

    @functools.wraps(f)
    def caller(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        if ctx.obj is None:
            ctx.obj = CLIContext(app=None, no_color=True, workdir=None)
        return f(ctx, *args, **kwargs)

    return caller


@click.group(name="durable", cls=DurableGroup)
@click.pass_context
@_cli_context
@handle_preload_options
def durable(ctx: click.Context, **kwargs: Any) -> None:
    """celery-durable: spill stores, dead letters and restore."""


dlq.dlq.add_command(dlq_restore.restore_command)
dlq.dlq.add_command(dlq_unpark.unpark_command)

durable.add_command(status.status)
durable.add_command(spill.spill)
durable.add_command(dlq.dlq)
durable.add_command(web.web)
