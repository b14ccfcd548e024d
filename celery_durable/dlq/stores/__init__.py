"""Dump stores by URL scheme, and the registry users plug their own into.

``durable_dlq_url`` picks the store: ``file:///path`` (the default, under
``$CELERY_DURABLE_DIR/dlq``) or ``redis://host:port/db``.  A user store is a
:class:`~celery_durable.dlq.base.DumpStore` subclass implementing
``write_encoded`` (frame and persist already-encoded dumps), ``entries``,
``delete`` and ``quarantined``, registered with::

    from celery_durable.dlq import register_store
    register_store("s3", lambda url, *, codec, version: MyS3Store(url, codec, version))

Factories are called with the URL and keyword arguments ``codec``
(:class:`~celery_durable.dlq.codec.Codec`) and ``version`` (``durable_dlq_version``).
The store encodes with that codec (``DumpStore.encode``, applied once per dump);
a store that does not keep it as ``self.codec`` gets it set by :func:`open_store`.
Built-in stores are registered by import path so that ``redis`` is imported only
when a ``redis://`` store is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ...exceptions import ConfigError
from ...options import default_dir
from ..base import DumpStore
from ..codec import Codec, codec_for_app

__all__ = ["default_url", "factory_for", "open_store", "register_store", "store_for_app"]

StoreFactory = Callable[..., DumpStore]

_REGISTRY: dict[str, StoreFactory | str] = {
    "file": "celery_durable.dlq.stores.filestore:FileStore",
    "redis": "celery_durable.dlq.stores.redisstore:RedisStore",
    "rediss": "celery_durable.dlq.stores.redisstore:RedisStore",
    "redis+sentinel": "celery_durable.dlq.stores.redisstore:RedisStore",
    "unix": "celery_durable.dlq.stores.redisstore:RedisStore",
}


def register_store(scheme: str, factory: StoreFactory | str) -> None:
    """Use ``factory`` (a callable or ``"module:attr"``) for ``scheme://`` URLs."""
    _REGISTRY[scheme.lower()] = factory


def default_url() -> str:
    return (default_dir() / "dlq").resolve().as_uri()


def _resolve(factory: StoreFactory | str) -> StoreFactory:
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        resolved: StoreFactory = getattr(importlib.import_module(module), attr)
        return resolved
    return factory


def factory_for(url: str) -> StoreFactory:
    """The factory ``url``'s scheme is registered with; ``ConfigError`` if there is none.

    A worker calls it at start-up so a bad ``durable_dlq_url`` fails there, not
    at the first task failure.
    """
    scheme = urlsplit(url).scheme.lower()
    factory = _REGISTRY.get(scheme)
    if factory is None:
        raise ConfigError(
            f"durable_dlq_url {url!r}: unknown scheme {scheme!r}; registered: "
            + ", ".join(sorted(_REGISTRY))
        )
    try:
        return _resolve(factory)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"durable_dlq_url {url!r}: cannot load its store: {exc}") from exc


def open_store(
    url: str | None = None, *, codec: Codec | None = None, version: int = 1
) -> DumpStore:
    """Open the store for ``url`` (empty: the default ``file://`` store)."""
    url = url or default_url()
    codec = codec or Codec()
    store = factory_for(url)(url, codec=codec, version=version)
    if getattr(store, "codec", None) is None:
        store.codec = codec
    return store


def store_for_app(app: Any, url: str | None = None) -> DumpStore:
    """The store an app's ``durable_dlq_*`` settings name (``url`` overrides the setting)."""
    from ...settings import durable_settings
    from ..retention import Retention

    settings = durable_settings(app.conf)
    store = open_store(
        url or settings["durable_dlq_url"],
        codec=codec_for_app(app, settings["durable_dlq_serializer"]),
        version=settings["durable_dlq_version"],
    )
    # Read by retention.after_flush (the dump queue) and the console.
    store.retention = Retention.from_settings(settings)  # type: ignore[attr-defined]
    return store
