"""What a dead-letter dump is, and the interface every dump store implements.

A store is chosen by URL (``durable_dlq_url``): ``file:///path`` or
``redis://host:port/db``.  Users can add their own by subclassing
:class:`DumpStore` and registering a URL scheme (see ``celery_durable.dlq.stores``).

One primitive, one encoding: :meth:`DumpStore.encode` is the only place a
:class:`DumpEntry` becomes bytes (the store's :class:`~.codec.Codec`, so the
app's ``durable_dlq_serializer``), giving an :class:`EncodedDump`; a store
implements :meth:`DumpStore.write_encoded`, which only frames and persists those
bytes.  The dump queue and its write-ahead log carry :class:`EncodedDump` from
the failing task to the store, so a dump is encoded exactly once.
:meth:`DumpStore.write` is the convenience for callers holding entries.
"""

from __future__ import annotations

import abc
import contextlib
import socket
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .codec import Codec

__all__ = ["DumpEntry", "DumpStore", "EncodedDump", "QuarantinedDump", "is_parked"]

HOST = socket.gethostname()


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
        known = cls.__dataclass_fields__
        if cls is DumpEntry and len(data) == len(known) and data.keys() == known.keys():
            # Every field, as to_dict() wrote it: what __init__ would do, without its
            # keyword-argument call (a restore reads thousands of dumps a second).
            entry = object.__new__(cls)
            entry.__dict__.update(data)
            return entry
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class EncodedDump:
    """A dump as its store's codec encoded it, with what a store needs to file it.

    ``payload`` is self-describing (:mod:`.codec`); the other fields are copies
    of the entry's, so a store can index, order and count without decoding.
    """

    task_id: str
    task_name: str
    failed_at: float
    payload: bytes


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
    """Where dumps are written and read.  Implementations must be process-safe.

    Subclasses implement :meth:`write_encoded`, :meth:`entries`, :meth:`delete`
    and :meth:`quarantined`, and keep the codec they are given as ``self.codec``
    (``open_store`` sets it on a store that does not).
    """

    url: str
    codec: Codec

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Before 0.2 ``write(entries)`` was the abstract method: a store written
        # then still works, its entries decoded back from the encoded dumps.
        legacy = "write" in cls.__dict__ and getattr(
            cls.write_encoded, "__isabstractmethod__", False
        )
        if legacy:
            warnings.warn(
                f"{cls.__qualname__} implements DumpStore.write(); implement "
                "write_encoded(dumps) instead (write() is now derived from it)",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.write_encoded = _legacy_write_encoded  # type: ignore[method-assign]

    def encode(self, entry: DumpEntry) -> EncodedDump:
        """``entry`` through this store's codec: the one place a dump becomes bytes."""
        if not entry.host:
            entry.host = HOST
        return EncodedDump(
            entry.task_id, entry.task_name, entry.failed_at, self.codec.encode(entry)
        )

    def write(self, entries: Sequence[DumpEntry]) -> None:
        """Encode and persist ``entries`` atomically; fills in their ``entry_id``."""
        ids = self.write_encoded([self.encode(e) for e in entries])
        for entry, entry_id in zip(entries, ids, strict=True):
            entry.entry_id = entry_id

    @abc.abstractmethod
    def write_encoded(self, dumps: Sequence[EncodedDump]) -> list[str]:
        """Persist ``dumps`` atomically (all or none); return their entry ids in order.

        The payloads are final: frame them, never re-encode.  Raises ``DumpError``.
        """

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

    @contextlib.contextmanager
    def batched_deletes(self) -> Iterator[None]:
        """A run of :meth:`delete` calls (a restore deletes after every chunk).

        A store may make the deletes inside durable only when the block ends
        (``FileStore`` fsyncs then); each must still be visible at once.  The
        default does nothing.
        """
        yield

    @abc.abstractmethod
    def quarantined(self) -> list[QuarantinedDump]:
        """Segments/records that failed checksum or carry another format version."""

    def count(self, *, task: str | None = None) -> int:
        """How many live dumps (optionally of one task name)."""
        return sum(1 for _ in self.entries(task=task))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


def _legacy_write_encoded(self: DumpStore, dumps: Sequence[EncodedDump]) -> list[str]:
    entries = [self.codec.decode(d.payload) for d in dumps]
    self.write(entries)
    return [e.entry_id for e in entries]
