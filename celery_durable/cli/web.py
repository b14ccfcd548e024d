"""``celery -A proj durable web [--host 127.0.0.1] [--port 5556] [--read-only]``: the console.

Needs the ``celery-durable[web]`` extra.  Binds loopback by default and refuses
any other address unless authentication is configured (see
:mod:`celery_durable.web.security` and ``docs/src/console.md``).
"""

from __future__ import annotations

import socket

import click
from celery.bin.base import CeleryOption

from ..exceptions import DurableError
from .base import DurableCommand, fail, get_app

__all__ = ["web"]

DEFAULT_PORT = 5556
SERVER = {"cls": CeleryOption, "help_group": "Server Options"}


@click.command(name="web", cls=DurableCommand)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.", **SERVER)
@click.option(
    "--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to bind.", **SERVER
)
@click.option(
    "--read-only", is_flag=True, help="Serve no action (restore, purge, unpark).", **SERVER
)
@click.option(
    "--url",
    default=None,
    cls=CeleryOption,
    help_group="Store Options",
    help="Dump store URL (default: the app's durable_dlq_url).",
)
@click.pass_context
def web(ctx: click.Context, host: str, port: int, read_only: bool, url: str | None) -> None:
    """Serve the dead-letter console: overview, search, detail, restore, purge."""
    try:
        import uvicorn

        from ..web import create_app
        from ..web.security import auth_from_env, check_bind
    except ImportError as exc:
        fail(f"web: the console needs the web extra: pip install 'celery-durable[web]' ({exc})")
    from ..dlq.stores import store_for_app

    app = get_app(ctx)
    try:
        auth = auth_from_env()
        check_bind(host, auth)
        asgi = create_app(
            app, lambda: store_for_app(app, url), read_only=read_only, auth=auth, bind_host=host
        )
    except DurableError as exc:
        fail(f"web: {exc}")
    # Bind here, so a taken port is our one-line error, and --port 0 can be told.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        fail(f"web: cannot listen on {host}:{port}: {exc}")
    port = sock.getsockname()[1]
    mode = "read-only" if read_only else "read-write"
    secured = "authentication required" if auth.configured else "no authentication"
    where = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    click.echo(f"celery-durable console on http://{where}:{port}/ ({mode}, {secured})")
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="info", access_log=False))
    server.run(sockets=[sock])
