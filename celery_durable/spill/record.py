"""The spill record: one Kombu message exactly as a producer published it.

A record is stored *before* routing (exchange and routing key as given), with the
declarations the message needs, so the drainer can declare and route it later on
a broker that may have forgotten everything.  The byte format (version, CRC32,
JSON metadata, raw body; never pickle) is defined by :func:`encode` /
:func:`decode` below.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SpillRecord"]


@dataclass
class SpillRecord:
    """A message waiting for the broker."""

    body: bytes
    exchange: str
    routing_key: str
    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    #: Entity declarations (``{"op": "exchange_declare"|"queue_declare"|"queue_bind", ...}``
    #: keyword arguments as passed to the channel) to replay before publishing.
    declarations: list[dict[str, Any]] = field(default_factory=list)
    #: Wall-clock time the producer published it (drain lag, oldest record age).
    created: float = field(default_factory=time.time)
