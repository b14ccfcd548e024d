"""Read a Celery app's durable transport configuration (for the CLI and tools).

The CLI must find the same spill directory the app's producers use, without
publishing anything: broker URL, ``broker_transport_options`` and the per-broker
sub-directory of ``spill_dir`` are derived exactly as the transport does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import Connection

from .naming import broker_dir_name, safe_url
from .options import DurableOptions, split_options

__all__ = ["DurableConfig", "drain_orphans", "durable_config"]


@dataclass(frozen=True)
class DurableConfig:
    broker_url: str
    inner_url: str
    options: DurableOptions
    inner_options: dict[str, Any]

    @property
    def store_dir(self) -> Path:
        """Where this broker's per-process stores live: ``spill_dir/<broker>``."""
        from .sentinel import spill_identity

        return self.options.spill_dir / broker_dir_name(
            spill_identity(self.inner_url, self.inner_options)
        )


def durable_config(app: Any) -> DurableConfig | None:
    """The app's durable transport configuration, or None if it does not use it."""
    conn: Connection = app.connection_for_write()
    try:
        transport = conn.transport_cls
        uses_durable = transport == "durable" or (
            isinstance(transport, str) and transport.startswith("celery_durable")
        )
        if not uses_durable:
            return None
        from . import _inner_url

        # Read attributes only: this must work without the transport's classes
        # (and never adopts: ``drain_orphans`` does that on purpose).
        options, inner = split_options(conn.transport_options or {})
        inner_url = _inner_url(conn)
        if inner_url.startswith("sentinel://"):  # every Sentinel, not the first URL only
            from .sentinel import sentinel_broker

            inner_url = sentinel_broker(conn, inner).url
        return DurableConfig(safe_url(f"durable+{inner_url}"), inner_url, options, inner)
    finally:
        conn.release()


def drain_orphans(app: Any, timeout: float) -> tuple[int, int]:
    """Adopt every dead process's store for the app's broker and drain it.

    Returns (records found, records left).  Uses the transport itself: its
    spiller adopts orphans when started, and its drainer forwards them.
    """
    from .registry import spillers

    conn: Connection = app.connection_for_write()
    try:
        transport: Any = conn.transport
        spiller = transport.spiller
        spiller.start()
        found = left = spiller.backlog()
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = spiller.backlog()
        for s in spillers():
            s.close(0.0)
        return found, left
    finally:
        conn.release()
