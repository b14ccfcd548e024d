"""``celery -A proj durable ...``: inspect, drain, restore and purge.

Registered through the ``celery.commands`` entry point.  Each command group lives
in its own module (``spill``, ``dlq``, ``status``, ``web``) and is attached here.  Every
command exits non-zero with a one-line reason on failure (:func:`fail`).
"""

from __future__ import annotations

from typing import Any, NoReturn

import click

__all__ = ["durable", "fail", "get_app"]


@click.group(name="durable")
@click.pass_context
def durable(ctx: click.Context) -> None:
    """celery-durable: spill stores, dead letters and restore."""


def get_app(ctx: click.Context) -> Any:
    """The Celery app chosen with ``celery -A``, or the current app."""
    obj = ctx.find_root().obj
    app = getattr(obj, "app", None)
    if app is None:
        from celery import current_app

        app = current_app
    return app


def fail(message: str) -> NoReturn:
    """Exit non-zero with a one-line reason."""
    raise click.ClickException(message.splitlines()[0] if message else "failed")


def _attach() -> None:
    # Imported here so each group module can import `durable`, `fail`, `get_app`.
    from . import dlq, dlq_restore, dlq_unpark, spill, status, web  # noqa: F401


_attach()
