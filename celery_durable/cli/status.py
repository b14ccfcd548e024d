"""``celery durable status``: backlog, breaker state, dump counts, parked."""

from __future__ import annotations

import click

from . import durable


@durable.command(name="status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Backlog per spill store, breaker state, dump and parked counts."""
    click.echo("status: not implemented yet")
