"""The spill store: a per-process FIFO log of :class:`SpillRecord` on LevelDB.

Invariants (each one is tested):

* **Keyspaces.** One LevelDB holds ``b"r" + seq`` (backlog records),
  ``b"q" + seq`` (quarantined bytes that failed to decode) and ``b"m"`` (meta).
  ``seq`` is an 8-byte big-endian integer, so key order is append order.
* **Meta in the same batch.** ``b"m"`` packs ``next_seq, acked_upto, records,
  bytes, quarantined`` and is written in the *same* ``write_batch`` as every
  append, ack and quarantine, so a crash can never separate the counters from
  the data, and opening a store never scans it.
* **Seek cursor.** Acked records become tombstones at the head of the keyspace;
  seeking to the first key walks them all (tens of ms after ~100k deletes,
  DESIGN.md §7).  Reads therefore always seek to ``r + (acked_upto + 1)``.
* **Threads.** Many producer threads append while one drainer peeks and acks.
  A single lock serialises sequence allocation, the write and the counters, so
  the meta written last is always the newest (LevelDB serialises writes anyway).
* **One process per store.** LevelDB's ``LOCK`` file is held while the store is
  open and released when its owner dies: that is how orphans are recognised
  (:mod:`.directory`).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plyvel

from .. import metrics
from ..exceptions import CorruptRecord, SpillError, SpillFull, VersionMismatch
from .record import SpillRecord, decode, encode

__all__ = ["SYNC_MODES", "CheckReport", "SpillStore", "StoreLocked", "check", "open_paths"]

logger = logging.getLogger(__name__)

SYNC_MODES = ("none", "interval", "always")

_REC = b"r"
_QUAR = b"q"
_META_KEY = b"m"
_SEQ = struct.Struct(">Q")
_META = struct.Struct(">QQQQQ")  # next_seq, acked_upto, records, bytes, quarantined
_REC_END = b"s"  # first key after every b"r..." key

# Resolved paths of stores open in *this* process: LevelDB refuses a second
# open of the same directory in one process, and find_orphans must not probe them.
_open_lock = threading.Lock()
_open_stores: dict[Path, SpillStore] = {}


class StoreLocked(SpillError):
    """The store's LevelDB lock is held by a live process (possibly this one)."""


def open_paths() -> dict[Path, SpillStore]:
    """Stores currently open in this process, by resolved path (a copy)."""
    with _open_lock:
        return dict(_open_stores)


def _rkey(seq: int) -> bytes:
    return _REC + _SEQ.pack(seq)


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, plyvel.IOError) and "lock" in str(exc).lower()


def open_db(path: Path, *, create: bool) -> plyvel.DB:
    """Open the LevelDB at ``path``: :class:`StoreLocked` or :class:`SpillError` on failure."""
    try:
        return plyvel.DB(str(path), create_if_missing=create)
    except plyvel.Error as exc:
        if _is_lock_error(exc):
            raise StoreLocked(f"spill store {path} is in use by a live process: {exc}") from exc
        raise SpillError(f"cannot open spill store {path}: {exc}") from exc


class SpillStore:
    """Append-only FIFO of spilled messages, acknowledged from the head.

    ``sync``: ``"none"`` (plain writes: survive a process crash), ``"always"``
    (fsync every write) or ``"interval"`` (an fsync'ed write at least every
    ``sync_interval`` seconds while writes happen; a helper thread sleeps on an
    event when there is nothing to sync).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        sync: str = "none",
        sync_interval: float = 0.5,
    ) -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"spill_sync={sync!r}: must be one of {', '.join(SYNC_MODES)}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.sync = sync
        self.sync_interval = sync_interval
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._closed = True
        self._oldest: float | None = None
        self._oldest_known = False
        self._write_sync = sync == "always"
        self._dirty = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        key = self.path.resolve()
        with _open_lock:
            if key in _open_stores:
                raise StoreLocked(f"spill store {self.path} is already open in this process")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SpillError(f"cannot create spill store {self.path}: {exc}") from exc
            self._db = open_db(self.path, create=True)
            _open_stores[key] = self
        self._key = key
        self._closed = False
        try:
            self._load_meta()
        except BaseException:
            self.close()
            raise
        if sync == "interval":
            self._syncer = threading.Thread(
                target=self._sync_loop, name=f"spill-sync-{self.path.name}", daemon=True
            )
            self._syncer.start()

    # -- state --------------------------------------------------------------
    def _load_meta(self) -> None:
        raw = self._db.get(_META_KEY)
        if raw is None:
            self._next, self._acked, self._count, self._bytes, self._quar = 1, 0, 0, 0, 0
        else:
            self._next, self._acked, self._count, self._bytes, self._quar = _META.unpack(raw)
        # Cheap self-checks (two seeks, never a scan): sequence numbers must stay
        # above every stored key, and an empty range means an empty backlog.
        with self._db.iterator(prefix=_REC, reverse=True, include_value=False) as it:
            last = next(it, None)
        if last is not None:
            self._next = max(self._next, _SEQ.unpack(last[1:])[0] + 1)
        if self._first_key() is None and (self._count or self._bytes):
            logger.warning(
                "spill store %s: meta says %d records but none are stored; resetting counters",
                self.path,
                self._count,
            )
            self._count = self._bytes = 0

    def _first_key(self) -> bytes | None:
        with self._db.iterator(
            start=_rkey(self._acked + 1), stop=_REC_END, include_value=False
        ) as it:
            return next(it, None)

    def _meta(self) -> bytes:
        return _META.pack(self._next, self._acked, self._count, self._bytes, self._quar)

    def __len__(self) -> int:
        return self._count

    @property
    def backlog_bytes(self) -> int:
        """Encoded bytes of every un-acked record (what ``max_bytes`` bounds)."""
        return self._bytes

    @property
    def quarantined(self) -> int:
        """Records moved to the quarantine keyspace since the store was created."""
        return self._quar

    @property
    def oldest_created(self) -> float | None:
        """``created`` of the oldest un-acked record (drain lag), or None when empty."""
        if self._count == 0:
            return None
        if not self._oldest_known:
            self._oldest = None
            with self._db.iterator(start=_rkey(self._acked + 1), stop=_REC_END) as it:
                for _key, value in it:
                    try:
                        self._oldest = decode(value).created
                        break
                    except (CorruptRecord, VersionMismatch):
                        continue  # peek() quarantines it
            self._oldest_known = True
        return self._oldest

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing ------------------------------------------------------------
    def append(self, record: SpillRecord) -> int:
        """Store one record; return its sequence number."""
        value = encode(record)
        size = len(value)
        with self._lock:
            if self._closed:
                raise SpillError(f"spill store {self.path} is closed")
            if self._bytes + size > self.max_bytes:
                raise self._full(size)
            seq = self._next
            count = self._count + 1
            nbytes = self._bytes + size
            try:
                with self._db.write_batch(sync=self._write_sync) as wb:
                    wb.put(_REC + _SEQ.pack(seq), value)
                    wb.put(_META_KEY, _META.pack(seq + 1, self._acked, count, nbytes, self._quar))
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: write failed: {exc}") from exc
            self._next = seq + 1
            self._count = count
            self._bytes = nbytes
            if count == 1:
                self._oldest, self._oldest_known = record.created, True
        if self._syncer is not None and not self._dirty:
            self._dirty = True
            self._wake.set()
        return seq

    def extend(self, records: Sequence[SpillRecord]) -> int:
        """Store ``records`` in one atomic batch; return the last sequence number.

        Returns the last sequence number already used when ``records`` is empty.
        """
        values = [encode(r) for r in records]
        size = sum(map(len, values))
        with self._lock:
            if self._closed:
                raise SpillError(f"spill store {self.path} is closed")
            if not values:
                return self._next - 1
            if self._bytes + size > self.max_bytes:
                raise self._full(size)
            first = self._next
            last = first + len(values) - 1
            count = self._count + len(values)
            nbytes = self._bytes + size
            try:
                with self._db.write_batch(sync=self._write_sync) as wb:
                    pack = _SEQ.pack
                    for seq, value in enumerate(values, first):
                        wb.put(_REC + pack(seq), value)
                    wb.put(_META_KEY, _META.pack(last + 1, self._acked, count, nbytes, self._quar))
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: write failed: {exc}") from exc
            was_empty = self._count == 0
            self._next, self._count, self._bytes = last + 1, count, nbytes
            if was_empty:
                self._oldest, self._oldest_known = records[0].created, True
        if self._syncer is not None and not self._dirty:
            self._dirty = True
            self._wake.set()
        return last

    def _full(self, size: int) -> SpillFull:
        return SpillFull(
            f"spill store {self.path} is full: {self._bytes} + {size} bytes would exceed "
            f"spill_max_bytes={self.max_bytes}"
        )

    # -- reading ------------------------------------------------------------
    def peek(self, limit: int) -> list[tuple[int, SpillRecord]]:
        """The oldest ``limit`` un-acked records, oldest first, as ``(seq, record)``.

        Does not remove anything: the drainer calls :meth:`ack` once the broker
        has them.  Undecodable records are quarantined, counted and skipped.
        """
        out: list[tuple[int, SpillRecord]] = []
        if limit <= 0:
            return out
        with self._read_lock:
            self._check_open()
            bad: list[tuple[bytes, bytes, Exception]] = []
            try:
                with self._db.iterator(start=_rkey(self._acked + 1), stop=_REC_END) as it:
                    for key, value in it:
                        try:
                            out.append((_SEQ.unpack(key[1:])[0], decode(value)))
                        except (CorruptRecord, VersionMismatch) as exc:
                            bad.append((key, value, exc))
                            continue
                        if len(out) >= limit:
                            break
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: read failed: {exc}") from exc
            if bad:
                self._quarantine(bad)
            if not out and not bad and self._count:
                self._reset_empty()
        return out

    def _quarantine(self, bad: list[tuple[bytes, bytes, Exception]]) -> None:
        with self._lock:
            quar = self._quar + len(bad)
            count = max(0, self._count - len(bad))
            nbytes = max(0, self._bytes - sum(len(v) for _k, v, _e in bad))
            try:
                with self._db.write_batch(sync=self._write_sync) as wb:
                    for key, value, _exc in bad:
                        wb.delete(key)
                        wb.put(_QUAR + key[1:], value)
                    wb.put(_META_KEY, _META.pack(self._next, self._acked, count, nbytes, quar))
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: quarantine failed: {exc}") from exc
            self._quar, self._count, self._bytes = quar, count, nbytes
            self._oldest_known = False
        metrics.CORRUPT_RECORDS.labels(store="spill").inc(len(bad))
        for key, value, reason in bad:
            logger.error(
                "spill store %s: record %d (%d bytes) quarantined: %s",
                self.path,
                _SEQ.unpack(key[1:])[0],
                len(value),
                reason,
            )

    def _reset_empty(self) -> None:
        # Counters said records exist but the range is empty (a store damaged
        # and recovered by LevelDB can drop a batch): trust the data.
        with self._lock:
            if self._first_key() is not None:
                return
            logger.warning(
                "spill store %s: %d records counted but none stored; resetting counters",
                self.path,
                self._count,
            )
            self._count = self._bytes = 0
            self._db.put(_META_KEY, self._meta(), sync=self._write_sync)

    def ack(self, upto_seq: int) -> None:
        """Delete every record with ``seq <= upto_seq`` (one atomic batch)."""
        with self._read_lock:
            self._check_open()
            if upto_seq <= self._acked:
                return
            upto_seq = min(upto_seq, self._next - 1)
            keys: list[bytes] = []
            freed = 0
            try:
                with self._db.iterator(
                    start=_rkey(self._acked + 1), stop=_rkey(upto_seq + 1)
                ) as it:
                    for key, value in it:
                        keys.append(key)
                        freed += len(value)
                with self._lock:
                    count = max(0, self._count - len(keys))
                    nbytes = max(0, self._bytes - freed)
                    with self._db.write_batch(sync=self._write_sync) as wb:
                        for key in keys:
                            wb.delete(key)
                        meta = _META.pack(self._next, upto_seq, count, nbytes, self._quar)
                        wb.put(_META_KEY, meta)
                    self._acked, self._count, self._bytes = upto_seq, count, nbytes
                    self._oldest_known = False
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: ack failed: {exc}") from exc

    # -- maintenance --------------------------------------------------------
    def compact(self) -> None:
        """Compact the whole keyspace so a drained backlog gives its disk space back."""
        self._check_open()
        try:
            self._db.compact_range()
        except plyvel.Error as exc:
            raise SpillError(f"spill store {self.path}: compaction failed: {exc}") from exc

    def quarantine_items(self) -> list[tuple[int, bytes]]:
        """Raw bytes of quarantined records, for inspection."""
        self._check_open()
        with self._db.iterator(prefix=_QUAR) as it:
            return [(_SEQ.unpack(k[1:])[0], v) for k, v in it]

    def _check_open(self) -> None:
        if self._closed:
            raise SpillError(f"spill store {self.path} is closed")

    def _sync_loop(self) -> None:
        # Sleeps on an event while nothing is written; otherwise issues one
        # fsync'ed write per interval, which flushes every write before it.
        while not self._stop.is_set():
            self._wake.wait()
            if self._stop.wait(self.sync_interval):
                return
            self._wake.clear()
            self._dirty = False
            with self._lock:
                if self._closed:
                    return
                try:
                    self._db.put(_META_KEY, self._meta(), sync=True)
                except plyvel.Error as exc:  # pragma: no cover - disk failure
                    logger.error("spill store %s: interval sync failed: %s", self.path, exc)

    def close(self) -> None:
        """Close the store (idempotent); an ``interval`` store syncs once more first."""
        self._stop.set()
        self._wake.set()
        syncer = self._syncer
        if syncer is not None and syncer is not threading.current_thread():
            syncer.join()
        with self._lock:
            if self._closed:
                return
            try:
                if self.sync == "interval":
                    self._db.put(_META_KEY, self._meta(), sync=True)
            finally:
                self._closed = True
                self._db.close()
                with _open_lock:
                    if _open_stores.get(self._key) is self:
                        del _open_stores[self._key]

    def destroy(self) -> None:
        """Close and delete the store directory (an adopted store that is now empty)."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> SpillStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._count} records, {self._bytes} bytes"
        return f"<SpillStore {self.path} {state}>"


@dataclass
class CheckReport:
    """What :func:`check` found (and fixed, with ``repair=True``)."""

    path: Path
    records: int = 0
    bytes: int = 0
    corrupt: int = 0
    quarantined: int = 0
    meta_records: int | None = None
    meta_bytes: int | None = None
    repaired: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the store opens, every record decodes and the counters match."""
        if self.repaired:
            return not self.errors
        return (
            not self.errors
            and self.corrupt == 0
            and self.meta_records == self.records
            and self.meta_bytes == self.bytes
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "records": self.records,
            "bytes": self.bytes,
            "corrupt": self.corrupt,
            "quarantined": self.quarantined,
            "meta_records": self.meta_records,
            "meta_bytes": self.meta_bytes,
            "repaired": self.repaired,
            "errors": list(self.errors),
        }


def check(path: str | os.PathLike[str], *, repair: bool = False) -> CheckReport:
    """Scan a closed store: decode every record, recount, compare with the meta.

    With ``repair=True``: run LevelDB's ``repair_db`` first, move undecodable
    records to quarantine and rewrite the counters from the scan.  Raises
    :class:`StoreLocked` when the store is open (here or in a live process).
    """
    path = Path(path)
    report = CheckReport(path=path)
    if not (path / "CURRENT").exists() and not repair:
        report.errors.append("not a LevelDB store (no CURRENT file)")
        return report
    if path.resolve() in open_paths():
        raise StoreLocked(f"spill store {path} is open in this process")
    if repair:
        try:
            plyvel.repair_db(str(path))
        except plyvel.Error as exc:
            if _is_lock_error(exc):
                raise StoreLocked(f"spill store {path} is in use by a live process") from exc
            report.errors.append(f"repair_db failed: {exc}")
            return report
    try:
        db = open_db(path, create=False)
    except StoreLocked:
        raise
    except SpillError as exc:
        report.errors.append(str(exc))
        return report
    try:
        _scan(db, report, repair)
    except plyvel.Error as exc:
        report.errors.append(f"read failed: {exc}")
    finally:
        db.close()
    return report


def _scan(db: plyvel.DB, report: CheckReport, repair: bool) -> None:
    raw = db.get(_META_KEY)
    meta = _META.unpack(raw) if raw is not None else (1, 0, 0, 0, 0)
    next_seq, acked, meta_records, meta_bytes, meta_quar = meta
    report.meta_records, report.meta_bytes = meta_records, meta_bytes
    bad: list[tuple[bytes, bytes]] = []
    last = 0
    for key, value in db.iterator(prefix=_REC):
        last = _SEQ.unpack(key[1:])[0]
        try:
            decode(value)
        except (CorruptRecord, VersionMismatch):
            bad.append((key, value))
            report.corrupt += 1
            continue
        report.records += 1
        report.bytes += len(value)
    report.quarantined = sum(1 for _ in db.iterator(prefix=_QUAR, include_value=False))
    if not repair:
        return
    first = db.iterator(prefix=_REC, include_value=False)
    head = next(first, None)
    first.close()
    if head is not None:
        acked = min(acked, _SEQ.unpack(head[1:])[0] - 1)
    with db.write_batch(sync=True) as wb:
        for key, value in bad:
            wb.delete(key)
            wb.put(_QUAR + key[1:], value)
        quar = max(meta_quar, report.quarantined + len(bad))
        wb.put(
            _META_KEY,
            _META.pack(max(next_seq, last + 1), acked, report.records, report.bytes, quar),
        )
    report.quarantined += len(bad)
    report.repaired = True
    if bad:
        metrics.CORRUPT_RECORDS.labels(store="spill").inc(len(bad))
