"""Names from before the producer core was split (kept so imports keep working).

The publish path is :mod:`.router`, the background thread :mod:`.drainer`, the
per-process registry :mod:`.registry` and the broker naming :mod:`.naming`.
"""

from __future__ import annotations

from .naming import broker_dir_name
from .naming import safe_url as _safe_url  # noqa: F401 - the old private name
from .registry import Spiller, get_spiller, shutdown_all, spillers

__all__ = ["Spiller", "broker_dir_name", "get_spiller", "shutdown_all", "spillers"]
