"""The local spill store: a per-process FIFO of messages on LevelDB (plyvel).

``record`` is the byte format, ``store`` the log itself (append, peek, ack,
counters, sync, check), ``directory`` the per-process layout under
``spill_dir`` and how dead owners' stores are found for adoption.
"""

from __future__ import annotations

from .directory import StoreInfo, find_orphans, list_stores, new_store_path
from .record import SpillRecord, decode, encode
from .store import CheckReport, SpillStore, StoreLocked, check

__all__ = [
    "CheckReport",
    "SpillRecord",
    "SpillStore",
    "StoreInfo",
    "StoreLocked",
    "check",
    "decode",
    "encode",
    "find_orphans",
    "list_stores",
    "new_store_path",
]
