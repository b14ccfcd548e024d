"""What a dead-letter dump is, and the interface every dump store implements.

A store is chosen by URL (``durable_dlq_url``): ``file:///path`` or
``redis://host:port/db``.  Users can add their own by subclassing
:class:`DumpStore` and registering a URL scheme (see ``celery_durable.dlq.stores``).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DumpEntry", "DumpStore", "QuarantinedDump", "is_parked"]


@dataclass
class DumpEntry:
    """A task that failed for good, with all that is needed to republish and debug it."""

    task_id: str
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    #: Celery protocol-2 message headers rebuilt from the request (id, task, root_id,
    #: parent_id, group, group_index, retries, eta, expires, timelimit, stamps, ...).
    headers: dict[str, Any]
    #: Message properties (correlation_id, reply_to, priority, delivery_mode, ...).
    properties: dict[str, Any]
    #: Where it came from: exchange, routing_key, queue.
    delivery_info: dict[str, Any]
    #: The body's third element: callbacks, errbacks, chain, chord.
    embed: dict[str, Any]
    exc_type: str
    exc_message: str
    traceback: str
    hostname: str
    failed_at: float
    #: How many times this task was already restored (header ``x-durable-restores``).
    restores: int = 0
    #: Store-assigned id, unique within the store, ordered oldest first.  Empty
    #: until the entry has been written.
    entry_id: str = ""
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    #: The machine (``socket.gethostname()``) whose store holds this dump.  ``hostname``
    #: above is the worker's node name (``celery@box``); with a ``file://`` store
    #: only processes on ``host`` can read the dump, so restore fans out by it.
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A shallow dict of the fields (``dataclasses.asdict`` deep-copies: 4x slower)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DumpEntry:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class QuarantinedDump:
    """A segment or record the store could not read: kept on disk, reported, never deleted."""

    location: str
    reason: str
    version: int | None = None


def is_parked(entry: DumpEntry, max_attempts: int) -> bool:
    """Parked: restored ``max_attempts`` times already, so never restored automatically.

    Derived from ``entry.restores`` (nothing is stored), so raising
    ``durable_restore_max_attempts`` un-parks entries.
    """
    return entry.restores >= max_attempts


class DumpStore(abc.ABC):
    """Where dumps are written and read.  Implementations must be process-safe."""

    url: str

    @abc.abstractmethod
    def write(self, entries: list[DumpEntry]) -> None:
        """Persist ``entries`` atomically (all or none).  Raises ``DumpError``."""

    def encode(self, entry: DumpEntry) -> bytes:
        """``entry`` as this store will write it; the dump queue sizes its batches by it."""
        from .codec import Codec

        return Codec().encode(entry)

    def write_encoded(self, items: list[tuple[DumpEntry, bytes]]) -> None:
        """Like :meth:`write` for entries already passed through :meth:`encode`.

        Stores override it to avoid encoding twice; the default just writes.
        """
        self.write([entry for entry, _ in items])

    @abc.abstractmethod
    def entries(self, *, task: str | None = None) -> Iterator[DumpEntry]:
        """Live dumps, oldest first (``entry_id`` filled in), optionally one task name."""

    def get(self, task_id: str) -> DumpEntry | None:
        """The newest dump of ``task_id``, or ``None``."""
        found = None
        for entry in self.entries():
            if entry.task_id == task_id:
                found = entry
        return found

    @abc.abstractmethod
    def delete(self, entry_ids: Iterable[str]) -> int:
        """Remove dumps by ``entry_id``; return how many were removed."""

    @abc.abstractmethod
    def quarantined(self) -> list[QuarantinedDump]:
        """Segments/records that failed checksum or carry another format version."""

    def count(self, *, task: str | None = None) -> int:
        """How many live dumps (optionally of one task name)."""
        return sum(1 for _ in self.entries(task=task))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""
