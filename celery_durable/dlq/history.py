"""The restore history a message carries in header ``x-durable-restore-history``.

Every restore appends one small entry (when, which restore it was, the failure
it restores from, where and by what it was restored) to the dumped headers it
republishes.  Capture keeps custom headers when the task fails again, so the
next dump carries the history of every earlier round trip, which the console
and ``dlq show`` display.  Only the last :data:`MAX_HISTORY` entries are kept:
a task that fails for ever must not grow its headers without bound.
"""

from __future__ import annotations

import socket
from datetime import datetime, timezone
from typing import Any

from .base import DumpEntry

__all__ = [
    "HISTORY_HEADER",
    "MAX_HISTORY",
    "MAX_MESSAGE",
    "TRIGGERS",
    "append_history",
    "history_entry",
    "restore_history",
]

HISTORY_HEADER = "x-durable-restore-history"
#: Entries kept, newest last.
MAX_HISTORY = 20
#: Characters of the exception message kept per entry.
MAX_MESSAGE = 200
#: What started a restore: the beat schedule (task or fan-out command), the CLI
#: (``dlq restore``) or the console.
TRIGGERS = ("beat", "cli", "console")

_HOST = socket.gethostname()


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _iso(ts: Any) -> Any:
    """``ts`` (POSIX time) as UTC ISO 8601; a time no calendar holds stays as it is,
    because the history must never be why a dump cannot be restored."""
    # Cached per whole second: a restore formats one failure time per dump, and
    # failures come in bursts (fromtimestamp is a third of building a message).
    # Only where the fraction cannot round up into the next second (fromtimestamp
    # rounds to microseconds first).
    if type(ts) is float and 0.0 <= ts < 1e11:
        second = int(ts)
        if ts - second < 0.999999:
            text = _ISO_CACHE.get(second)
            if text is None:
                if len(_ISO_CACHE) >= _ISO_CACHE_MAX:
                    _ISO_CACHE.clear()
                text = _ISO_CACHE[second] = _iso_uncached(float(second))
            return text
    return _iso_uncached(ts)


def _iso_uncached(ts: Any) -> Any:
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError, TypeError):
        return ts


_ISO_CACHE: dict[int, Any] = {}
_ISO_CACHE_MAX = 4096


def history_entry(entry: DumpEntry, trigger: str, now: float) -> dict[str, Any]:
    """The record of restoring ``entry`` at ``now`` (a POSIX time)."""
    return {
        "at": _iso(now),
        "restores": entry.restores + 1,
        "exc_type": _truncate(str(entry.exc_type), MAX_MESSAGE),
        "exc_message": _truncate(str(entry.exc_message), MAX_MESSAGE),
        "failed_at": _iso(entry.failed_at),
        "host": _HOST,
        "by": trigger,
    }


def restore_history(headers: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The history in ``headers``, oldest first; anything malformed is left out.

    Headers come from a dump, so from whoever published the task: a value that
    is not a list of dicts is ignored rather than trusted.
    """
    if not isinstance(headers, dict):
        return []
    value = headers.get(HISTORY_HEADER)
    if not isinstance(value, (list, tuple)):
        return []
    return [dict(item) for item in value if isinstance(item, dict)]


def append_history(
    headers: dict[str, Any],
    entry: DumpEntry,
    trigger: str,
    now: float,
    limit: int = MAX_HISTORY,
) -> list[dict[str, Any]]:
    """Set ``headers[HISTORY_HEADER]`` to its history plus this restore, last ``limit`` kept."""
    history = restore_history(headers)
    history.append(history_entry(entry, trigger, now))
    kept = history[-limit:] if limit > 0 else []
    headers[HISTORY_HEADER] = kept
    return kept
