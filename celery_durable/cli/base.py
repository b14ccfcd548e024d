"""What every ``celery durable`` command shares: Celery's command classes and one error boundary.

Commands are :class:`DurableCommand` (Celery's ``CeleryCommand``: options grouped
by ``help_group`` in ``--help``) inside :class:`DurableGroup`\\ s, whose
sub-commands get the same classes.  Both run the command through
:func:`one_line_errors`, the single place where an expected failure (one of our
:class:`~celery_durable.exceptions.DurableError`\\ s, a ``ValueError`` such as a
bad broker URL, an ``OSError``, a broker that cannot be reached) becomes the
contract's one-line ``Error: ...`` and exit status 1 instead of a traceback.
A command body that wants a specific message calls :func:`fail`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, NoReturn

import click
from celery.bin.base import CeleryCommand
from kombu.exceptions import OperationalError

from ..exceptions import DurableError

__all__ = ["EXPECTED_ERRORS", "DurableCommand", "DurableGroup", "fail", "get_app", "one_line"]

logger = logging.getLogger(__name__)

#: Failures a command reports in one line (anything else is a bug: traceback).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    DurableError,
    ValueError,  # includes UnicodeDecodeError and ConfigError
    OSError,
    OperationalError,
)


def get_app(ctx: click.Context) -> Any:
    """The Celery app chosen with ``celery -A``, or the current app."""
    obj = ctx.find_root().obj
    app = getattr(obj, "app", None)
    if app is None:
        from celery import current_app

        app = current_app
    return app


def one_line(message: str) -> str:
    """The first non-empty line of ``message``."""
    return next((line.strip() for line in message.splitlines() if line.strip()), "failed")


def fail(message: str) -> NoReturn:
    """Exit non-zero with a one-line reason."""
    raise click.ClickException(one_line(message))


def _command_name(ctx: click.Context) -> str:
    """``dlq import`` for ``celery -A proj durable dlq import``."""
    names: list[str] = []
    node: click.Context | None = ctx
    while node is not None and node.info_name not in (None, "durable"):
        names.append(str(node.info_name))
        node = node.parent
    return " ".join(reversed(names)) or "durable"


@contextlib.contextmanager
def one_line_errors(ctx: click.Context) -> Iterator[None]:
    """Turn an expected failure into ``Error: <command>: <reason>`` (exit status 1)."""
    try:
        yield
    except click.ClickException:
        raise
    except EXPECTED_ERRORS as exc:
        logger.debug("celery durable %s failed", _command_name(ctx), exc_info=True)
        reason = one_line(str(exc)) if str(exc).strip() else type(exc).__name__
        if isinstance(exc, UnicodeDecodeError):
            reason = f"not UTF-8 text ({reason})"
        raise click.ClickException(f"{_command_name(ctx)}: {reason}") from exc


class DurableCommand(CeleryCommand):
    """A ``celery durable`` command: Celery's command class behind the error boundary."""

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors(ctx):
            return super().invoke(ctx)


class DurableGroup(click.Group):
    """A ``celery durable`` command group; its sub-commands and sub-groups share the classes."""

    command_class = DurableCommand
    group_class = type  # sub-groups are DurableGroups too

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors(ctx):
            return super().invoke(ctx)
