"""The durable transport's own options in ``broker_transport_options``.

They share the dict with the inner transport's options (``visibility_timeout``,
``socket_timeout``, ...).  A key is ours when it is declared below or starts
with one of :data:`OUR_PREFIXES`; an unknown key of ours is a
:class:`~celery_durable.exceptions.ConfigError` at start-up, anything else is
handed to the inner transport untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..options import Option, default_dir, validate

__all__ = ["OUR_PREFIXES", "TRANSPORT_OPTIONS", "DurableOptions", "split_options"]

OUR_PREFIXES = ("durable_", "spill_", "drain_", "buffer_", "publish_", "shutdown_")

TRANSPORT_OPTIONS: tuple[Option, ...] = (
    Option("publish_mode", str, "direct",
           "direct: return once the broker or the spill store has the message; "
           "buffered: once it is in the in-memory buffer; wal: once it is in the spill store.",
           choices=("direct", "buffered", "wal")),
    Option("publish_timeout", float, 1.0,
           "Seconds a publish may wait on the broker before it spills and opens the "
           "circuit breaker; also the redis socket/connect timeout for publishing.", min=0.001),
    Option("spill_dir", str, "",
           "Directory of the spill stores. Empty: $CELERY_DURABLE_DIR/spill."),
    Option("spill_max_bytes", int, 1 << 30,
           "Most bytes a process's spill store holds; beyond it a publish raises SpillFull "
           "(or blocks, see spill_when_full).", min=1),
    Option("spill_when_full", str, "raise",
           "raise: SpillFull to the caller; block: wait until the drainer makes room.",
           choices=("raise", "block")),
    Option("spill_sync", str, "none",
           "none: survives a process crash; interval: fsync every spill_sync_interval; "
           "always: fsync each write.", choices=("none", "interval", "always")),
    Option("spill_sync_interval", float, 0.5, "Seconds between fsyncs in interval mode.",
           min=0.001),
    Option("buffer_max_bytes", int, 16 << 20,
           "Bytes the in-memory publish buffer holds (buffered mode) before it spills.", min=1),
    Option("drain_batch", int, 500, "Records forwarded per pipelined batch.", min=1),
    Option("drain_rate", float, None,
           "Most spilled messages per second the drainer forwards (None: unlimited).",
           min=0.001, nullable=True),
    Option("shutdown_timeout", float, 5.0,
           "Seconds, at worker shutdown or interpreter exit, to flush the memory buffer "
           "to the broker or to disk.", min=0.0),
)  # fmt: skip


@dataclass(frozen=True)
class DurableOptions:
    """Validated durable options (attribute per option)."""

    publish_mode: str
    publish_timeout: float
    spill_dir: Path
    spill_max_bytes: int
    spill_when_full: str
    spill_sync: str
    spill_sync_interval: float
    buffer_max_bytes: int
    drain_batch: int
    drain_rate: float | None
    shutdown_timeout: float


def split_options(given: Mapping[str, Any]) -> tuple[DurableOptions, dict[str, Any]]:
    """Split ``broker_transport_options`` into (ours, validated) and (the inner transport's)."""
    ours_names = {opt.name for opt in TRANSPORT_OPTIONS}
    ours = {k: v for k, v in given.items() if k in ours_names or k.startswith(OUR_PREFIXES)}
    inner = {k: v for k, v in given.items() if k not in ours}
    values = validate(ours, TRANSPORT_OPTIONS, "durable transport")
    values["spill_dir"] = (
        Path(values["spill_dir"]).expanduser() if values["spill_dir"] else (default_dir() / "spill")
    )
    return DurableOptions(**values), inner
