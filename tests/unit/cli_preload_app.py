"""An app with a user preload option, for ``test_cli_structure`` (run as ``celery -A``)."""

from __future__ import annotations

import os
from typing import Any

import click
from celery import Celery
from celery.signals import user_preload_options

app = Celery("preload", broker="memory://", set_as_current=False)
app.conf.durable_dlq_url = os.environ["DLQ_URL"]
app.user_options["preload"].add(click.Option(["--tenant"], default="none"))


@user_preload_options.connect
def _print_tenant(sender: Any = None, app: Any = None, options: Any = None, **_: Any) -> None:
    print(f"preload tenant={options.get('tenant')}", flush=True)
