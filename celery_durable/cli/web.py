"""``celery -A proj durable web [--host 127.0.0.1] [--port 5556] [--read-only]``: the console.

Needs the ``celery-durable[web]`` extra.  Binds loopback by default and refuses
any other address unless authentication is configured (see
:mod:`celery_durable.web.security` and ``docs/src/console.md``).
"""

from __future__ import annotations

import click

from ..exceptions import DurableError
from . import durable, fail, get_app

DEFAULT_PORT = 5556


@durable.command(name="web")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to bind.")
@click.option("--read-only", is_flag=True, help="Serve no action (restore, purge, unpark).")
@click.option("--url", default=None, help="Dump store URL (default: the app's durable_dlq_url).")
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
    mode = "read-only" if read_only else "read-write"
    secured = "authentication required" if auth.configured else "no authentication"
    click.echo(f"celery-durable console on http://{host}:{port}/ ({mode}, {secured})")
    uvicorn.run(asgi, host=host, port=port, log_level="info", access_log=False)
