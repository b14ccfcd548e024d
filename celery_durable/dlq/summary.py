"""What a list of dumps shows, and the filters the console and the CLI share.

Listing 100,000 dumps must not decode 100,000 dumps per page.  A
:class:`DumpSummary` holds the few fields a list row and a filter need; stores
that can keep summaries cheaply (``FileStore``: per immutable segment;
``RedisStore``: per immutable entry id) do so in memory, reading only what is
new since their last call, through a ``summaries()`` method.  Any other store
falls back to decoding :meth:`DumpStore.entries`.  Writes are not touched: a
summary is made by the reader, from the dump itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .base import DumpEntry, DumpStore, QuarantinedDump

__all__ = ["AGES", "DumpFilter", "DumpSummary", "fetch", "summaries", "summarize"]

#: Characters of the exception message a summary keeps (searched and shown).
MESSAGE_CHARS = 500


@dataclass(frozen=True, slots=True)
class DumpSummary:
    entry_id: str
    task_id: str
    task_name: str
    exc_type: str
    exc_message: str
    queue: str
    failed_at: float
    restores: int
    host: str


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def summarize(entry: DumpEntry) -> DumpSummary:
    """The list row of ``entry``; a malformed field (a hand-edited or foreign dump) is
    shown by its ``repr`` or as 0, never trusted to have the right type."""
    info = entry.delivery_info if isinstance(entry.delivery_info, dict) else {}
    restores = entry.restores
    failed_at = entry.failed_at
    return DumpSummary(
        entry_id=_text(entry.entry_id),
        task_id=_text(entry.task_id),
        task_name=_text(entry.task_name),
        exc_type=_text(entry.exc_type),
        exc_message=_text(entry.exc_message)[:MESSAGE_CHARS],
        queue=_text(info.get("queue") or info.get("routing_key") or ""),
        failed_at=float(failed_at)
        if isinstance(failed_at, (int, float)) and not isinstance(failed_at, bool)
        else 0.0,
        restores=restores if isinstance(restores, int) and not isinstance(restores, bool) else 0,
        host=_text(entry.host or entry.hostname),
    )


def summaries(store: DumpStore) -> tuple[list[DumpSummary], list[QuarantinedDump]]:
    """Live dumps oldest first as summaries, and what the store could not read."""
    fast = getattr(store, "summaries", None)
    if fast is not None:
        found: tuple[list[DumpSummary], list[QuarantinedDump]] = fast()
        return found
    return [summarize(e) for e in store.entries()], store.quarantined()


def fetch(store: DumpStore, entry_ids: Iterable[str]) -> list[DumpEntry]:
    """The live dumps with these entry ids (missing ones are left out), oldest first."""
    wanted = set(entry_ids)
    fast = getattr(store, "fetch", None)
    if fast is not None:
        found: list[DumpEntry] = fast(wanted)
        return found
    return [e for e in store.entries() if e.entry_id in wanted]


#: Age filters: name -> (newer than, older than) in seconds.
AGES: dict[str, tuple[float | None, float | None]] = {
    "1h": (3600.0, None),
    "24h": (86400.0, None),
    "7d": (7 * 86400.0, None),
    ">1h": (None, 3600.0),
    ">24h": (None, 86400.0),
    ">7d": (None, 7 * 86400.0),
    ">30d": (None, 30 * 86400.0),
}


@dataclass(frozen=True)
class DumpFilter:
    """Which dumps an action or a list applies to; empty fields match everything."""

    task: str = ""
    exc: str = ""
    queue: str = ""
    #: Case-insensitive text searched in the exception message and the task id.
    text: str = ""
    #: "" (any), "yes" (parked only) or "no" (not parked).
    parked: str = ""
    #: A key of :data:`AGES`, or "".
    age: str = ""

    @classmethod
    def from_mapping(cls, data: Any) -> DumpFilter:
        def get(key: str) -> str:
            return str(data.get(key) or "").strip()

        parked = get("parked")
        age = get("age")
        return cls(
            task=get("task"),
            exc=get("exc"),
            queue=get("queue"),
            text=get("q"),
            parked=parked if parked in ("yes", "no") else "",
            age=age if age in AGES else "",
        )

    def as_params(self) -> dict[str, str]:
        """The query parameters that rebuild this filter (empty ones left out)."""
        pairs = {
            "task": self.task,
            "exc": self.exc,
            "queue": self.queue,
            "q": self.text,
            "parked": self.parked,
            "age": self.age,
        }
        return {k: v for k, v in pairs.items() if v}

    @property
    def empty(self) -> bool:
        return not self.as_params()

    def matches(self, s: DumpSummary, max_attempts: int, now: float | None = None) -> bool:
        if self.task and s.task_name != self.task:
            return False
        if self.exc and s.exc_type != self.exc:
            return False
        if self.queue and s.queue != self.queue:
            return False
        if self.parked and (s.restores >= max_attempts) != (self.parked == "yes"):
            return False
        if self.age:
            newer, older = AGES[self.age]
            age = (time.time() if now is None else now) - s.failed_at
            if newer is not None and age > newer:
                return False
            if older is not None and age < older:
                return False
        if self.text:
            needle = self.text.lower()
            if needle not in s.exc_message.lower() and needle not in s.task_id.lower():
                return False
        return True

    def select(
        self, rows: Iterable[DumpSummary], max_attempts: int, now: float | None = None
    ) -> list[DumpSummary]:
        """The matching rows, in order: one narrowing pass per field set (far quicker
        over 100,000 rows than :meth:`matches` per row)."""
        out = list(rows)
        if self.task:
            out = [s for s in out if s.task_name == self.task]
        if self.exc:
            out = [s for s in out if s.exc_type == self.exc]
        if self.queue:
            out = [s for s in out if s.queue == self.queue]
        if self.parked:
            parked = self.parked == "yes"
            out = [s for s in out if (s.restores >= max_attempts) == parked]
        if self.age:
            newer, older = AGES[self.age]
            now = time.time() if now is None else now
            if newer is not None:
                out = [s for s in out if now - s.failed_at <= newer]
            if older is not None:
                out = [s for s in out if now - s.failed_at >= older]
        if self.text:
            needle = self.text.lower()
            out = [s for s in out if needle in s.exc_message.lower() or needle in s.task_id.lower()]
        return out
