"""When a dump may be restored: exponential backoff and parking.

Both rules are *derived* from the entry (``failed_at``, ``restores``), so nothing
extra is stored and every process agrees on them:

* an entry restored ``n`` times is due at ``failed_at + backoff * 2**n``;
* an entry with ``restores >= max_attempts`` is parked: kept and listed, never
  restored automatically (only ``celery durable dlq restore`` brings it back).
"""

from __future__ import annotations

from ..dlq.base import DumpEntry, is_parked

__all__ = ["due_at", "is_due", "is_parked"]


def due_at(entry: DumpEntry, backoff: float) -> float:
    """Unix time at which ``entry`` becomes eligible for its next restore."""
    return entry.failed_at + backoff * (2 ** max(entry.restores, 0))


def is_due(entry: DumpEntry, backoff: float, now: float) -> bool:
    return due_at(entry, backoff) <= now
