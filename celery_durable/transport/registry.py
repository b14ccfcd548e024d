"""This process's durable publishing, one :class:`Spiller` per broker, keyed by pid.

A :class:`Spiller` pairs a broker's :class:`~.router.PublishRouter` with its
:class:`~.drainer.Drainer`.  The registry hands out one per (process, key):
keyed by pid, so a forked child (prefork pool, gunicorn worker) never shares its
parent's store or drainer thread, it gets its own.  :func:`shutdown_all` flushes
and closes this process's spillers at interpreter exit and worker shutdown.

Broker-neutral: a transport supplies a :class:`~.forwarder.ForwardsBatches` (how to
connect, declare, forward a batch and ping) and the errors that mean "broker
down"; :meth:`Spiller.create` builds the rest.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .breaker import Breaker
from .drainer import Drainer
from .forwarder import ForwardsBatches
from .options import DurableOptions
from .router import PublishRouter

__all__ = ["Spiller", "get_spiller", "shutdown_all", "spillers"]

logger = logging.getLogger(__name__)


class Spiller:
    """One broker's durable publishing in this process: a router and its drainer."""

    def __init__(self, name: str, router: PublishRouter, drainer: Drainer) -> None:
        #: The broker, for logs (credentials masked).
        self.name = name
        self.router = router
        self.drainer = drainer

    @classmethod
    def create(
        cls,
        name: str,
        store_dir: Path,
        options: DurableOptions,
        forwarder: ForwardsBatches,
        broker_errors: tuple[type[BaseException], ...],
    ) -> Spiller:
        """Router and drainer for one broker; nothing is started, nothing created on disk."""
        router = PublishRouter(options, store_dir, Breaker(name), broker_errors)
        return cls(name, router, Drainer(router, forwarder, broker_errors))

    @property
    def breaker(self) -> Breaker:
        return self.router.breaker

    @property
    def mode(self) -> str:
        return self.router.mode

    @property
    def closed(self) -> bool:
        return self.drainer.closed

    def start(self) -> None:
        """Adopt dead processes' stores and start draining (idempotent)."""
        self.drainer.start()

    def backlog(self) -> int:
        """Records of this process not yet at the broker (buffer, own and adopted stores)."""
        return self.drainer.backlog()

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` (default ``shutdown_timeout``) and stop."""
        self.drainer.close(timeout)


_SPILLERS: dict[tuple[Any, ...], Spiller] = {}
_SPILLERS_LOCK = threading.Lock()


def get_spiller(key: tuple[Any, ...], factory: Callable[[], Spiller]) -> Spiller:
    """The process's Spiller for ``key``, created by ``factory()`` on first use."""
    full_key = (os.getpid(), *key)
    spiller = _SPILLERS.get(full_key)
    if spiller is None:
        with _SPILLERS_LOCK:
            spiller = _SPILLERS.get(full_key)
            if spiller is None:
                spiller = _SPILLERS[full_key] = factory()
    return spiller


def spillers() -> list[Spiller]:
    """This process's live Spillers."""
    pid = os.getpid()
    return [s for key, s in list(_SPILLERS.items()) if key[0] == pid]


def shutdown_all(timeout: float | None = None) -> None:
    """Flush and close every Spiller of this process (exit, worker shutdown)."""
    pid = os.getpid()
    with _SPILLERS_LOCK:
        mine = [(k, s) for k, s in _SPILLERS.items() if k[0] == pid]
        for key, _ in mine:
            del _SPILLERS[key]
    for _, spiller in mine:
        try:
            spiller.close(timeout)
        except Exception:  # shutdown must go on
            logger.exception("celery-durable: error closing spiller for %s", spiller.name)


atexit.register(shutdown_all)
