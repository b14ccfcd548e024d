"""The local spill store: a per-process FIFO of messages on LevelDB (plyvel).

``record`` is the byte format, ``store`` the log itself (append, peek, ack,
counters, sync, check), ``directory`` the per-process layout under
``spill_dir``, how dead owners' stores are found for adoption, and where
damaged ones are kept (``spill_dir/quarantine/``, never deleted).
"""

from __future__ import annotations

from .directory import (
    QUARANTINE,
    StoreInfo,
    find_orphans,
    list_stores,
    new_store_path,
    quarantine_store,
)
from .record import SpillRecord, decode, encode
from .store import CheckReport, SpillStore, StoreDamaged, StoreLocked, check

__all__ = [
    "QUARANTINE",
    "CheckReport",
    "SpillRecord",
    "SpillStore",
    "StoreDamaged",
    "StoreInfo",
    "StoreLocked",
    "check",
    "decode",
    "encode",
    "find_orphans",
    "list_stores",
    "new_store_path",
    "quarantine_store",
]
