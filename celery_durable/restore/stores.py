"""Open the dump store an app is configured with (``durable_dlq_url``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..dlq.base import DumpStore
from ..dlq.stores import default_url
from ..settings import settings_for

__all__ = ["is_host_local", "open_app_store", "store_url"]


def store_url(app: Any) -> str:
    """``durable_dlq_url``, or ``file://$CELERY_DURABLE_DIR/dlq`` when empty."""
    return settings_for(app).dlq_url or default_url()


def is_host_local(url: str) -> bool:
    """A ``file://`` store lives on one host: only that host's workers can restore it."""
    return urlsplit(url).scheme == "file"


def open_app_store(app: Any) -> DumpStore:
    """The app's dump store, with its codec and format version."""
    # The capture side owns the store implementations.
    from ..dlq.stores import store_for_app

    return store_for_app(app, store_url(app))
