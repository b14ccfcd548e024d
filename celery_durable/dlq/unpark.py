"""Unpark: give dumps that reached ``durable_restore_max_attempts`` a fresh start.

Parking is derived from ``entry.restores`` (nothing else is stored), so unparking
rewrites the dump with ``restores = 0``: the new dump is written first, then the
old one deleted, so a crash in between leaves both (a duplicate, never a loss).
The unparked dump is due for the beat's restore after ``durable_restore_backoff``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .base import DumpEntry, DumpStore, is_parked

__all__ = ["unpark"]


def unpark(store: DumpStore, entries: Iterable[DumpEntry], max_attempts: int) -> int:
    """Unpark the parked ones among ``entries``; return how many."""
    old = [e for e in entries if isinstance(e.restores, int) and is_parked(e, max_attempts)]
    if not old:
        return 0
    fresh = []
    for entry in old:
        copy = DumpEntry.from_dict(entry.to_dict())
        copy.restores = 0
        copy.entry_id = ""
        fresh.append(copy)
    for start in range(0, len(fresh), 1000):
        store.write(fresh[start : start + 1000])
    store.delete(e.entry_id for e in old)
    return len(old)
