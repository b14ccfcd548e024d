"""The spill store: a per-process FIFO log of :class:`SpillRecord` on LevelDB.

Invariants (each one is tested):

* **Order.** Keys are big-endian sequence numbers allocated under one lock, so
  iteration order is append order, across reopen.
* **O(1) counters, crash-consistent.** Each record carries the running total of
  appended bytes; acks and quarantines write the meta in the *same* batch as
  their deletes.  Opening derives the backlog from both without scanning
  (:mod:`.layout` has the arithmetic).
* **Seek cursor.** Acked records become tombstones at the head of the keyspace;
  seeking to the first key walks them all (tens of ms after ~100k deletes,
  DESIGN.md §7).  Reads always seek to ``r + (acked_upto + 1)``.
* **Threads.** Many producer threads append while one drainer peeks and acks.
  One lock serialises sequence allocation, the write and the counters, so
  records land in sequence order; encoding happens outside it.
* **One process per store.** LevelDB's ``LOCK`` file is held while the store is
  open and released when its owner dies: that is how orphans are recognised
  (:mod:`.directory`).
* **Corruption never stops the reader.** A record that fails its CRC or
  decoding is moved to the quarantine keyspace, counted and skipped.
* **Loss is never silent, and a damaged store is never deleted.** Records the
  counters expect that LevelDB cannot read (a truncated table, a damaged log:
  LevelDB skips those and plyvel ends the iteration without an error) are
  counted in the persistent ``lost`` counter, logged and exported; a store with
  ``lost > 0`` or a read error is not :attr:`~SpillStore.is_intact`, and
  :meth:`~SpillStore.destroy` moves it to ``quarantine/`` instead of deleting it.
* **Fork-safe.** LevelDB is not (:mod:`.forksafe`): what may start its
  background thread is reported to :func:`.forksafe.mark`, and in a child
  forked after that (*tainted*) a store never lets LevelDB flush or compact: its
  write buffer holds everything written to it (:attr:`~SpillStore.write_budget`).
* **Owner only.** The store directory is ``0700`` and its files ``0600``
  (:mod:`celery_durable.files`): spilled messages carry task arguments.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import replace
from itertools import islice
from pathlib import Path

import plyvel

from .. import metrics
from ..exceptions import (
    ConfigError,
    CorruptRecord,
    SpillError,
    SpillFull,
    StoreDamaged,
    VersionMismatch,
)
from ..files import private_dir, private_files
from . import forksafe
from .check import CheckReport, check
from .directory import quarantine_store
from .layout import (
    KEY,
    META_KEY,
    QUAR,
    REC,
    REC_END,
    StoreLocked,
    StoreState,
    damage_note,
    find_key,
    first_created,
    first_key,
    lost_tables,
    open_db,
    open_lock,
    open_stores,
    read_error,
    read_state,
    rkey,
    seq_of,
)
from .record import SpillRecord, decode, encode

__all__ = ["SYNC_MODES", "CheckReport", "SpillStore", "StoreDamaged", "StoreLocked", "check"]

logger = logging.getLogger(__name__)

SYNC_MODES = ("none", "interval", "always")
#: While a drainer keeps up (``wal`` mode) the newest records appended (at most
#: this many, and :data:`TAIL_BYTES`) stay in memory too, and it reads them from
#: there instead of creating a LevelDB iterator per batch.
TAIL_RECORDS = 2048
TAIL_BYTES = 2 << 20
#: Bytes accounted per record beyond its encoded size: its key, LevelDB's
#: entry and skiplist overhead, and a reserve for its tombstone and the meta
#: written when it is acknowledged (a tainted store must never overflow its memtable).
WRITE_COST = 256


class SpillStore:
    """Append-only FIFO of spilled messages, acknowledged from the head.

    ``sync``: ``"none"`` (plain writes: they survive a process crash),
    ``"always"`` (fsync every write) or ``"interval"`` (an fsync'ed write at
    least every ``sync_interval`` seconds while writes happen; a helper thread
    sleeps on an event while nothing is written).  ``max_bytes`` bounds the
    encoded bytes of the backlog (:class:`SpillFull` beyond it).

    Opening raises :class:`StoreLocked` (a live process has it),
    :class:`StoreDamaged` (LevelDB cannot open it), :class:`SpillError` (the
    disk or permissions) or :class:`~celery_durable.exceptions.ConfigError`
    (a bad ``sync`` mode, or a path under a regular file).
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
            raise ConfigError(f"spill_sync={sync!r}: must be one of {', '.join(SYNC_MODES)}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.sync = sync
        self.sync_interval = sync_interval
        self._lock = threading.Lock()  # sequence, counters, every write
        self._read_lock = threading.Lock()  # the drainer side: peek / ack
        self._closed = True
        self._oldest: float | None = None
        self._oldest_known = False
        self._write_sync = sync == "always"
        self._dirty = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self._damage: str | None = None  # why the store is not intact (read errors)
        # The newest appended (seq, key, encoded value), contiguous seqs, under _lock;
        # kept only while a reader keeps up (_tail_on: set by a peek that reached
        # the newest record), so spilling with nobody draining pays nothing for it.
        self._tail: deque[tuple[int, bytes, bytes]] = deque()
        self._tail_bytes = 0
        self._tail_on = False
        # What the last peek handed out, (acked then, [(seq, key, size)]), for its ack.
        self._handed: tuple[int, list[tuple[int, bytes, int]]] | None = None
        self._key = self.path.resolve()
        # Bytes written to LevelDB since open (puts, and a reserve for each
        # record's tombstone), for the fork-safety accounting (:mod:`.forksafe`).
        self._written = 0
        # Up to this many written bytes _account has nothing to do or say.
        self._quiet_until = forksafe.DEFAULT_WRITE_BUFFER // forksafe.HEADROOM
        #: In a tainted process: the bytes that may be written to this store
        #: before LevelDB would switch memtables (None: no limit, not tainted).
        self.write_budget: int | None = None
        write_buffer = None
        if forksafe.tainted():
            write_buffer = forksafe.write_buffer_for(max_bytes)
            self.write_budget = write_buffer // forksafe.HEADROOM
            self._quiet_until = -1  # tainted: every write is checked against the budget
            forksafe.warn_once(
                f"spill stores get a {write_buffer}-byte write buffer and accept at most "
                f"{self.write_budget} bytes each until drained"
            )
        with open_lock:
            if self._key in open_stores:
                raise StoreLocked(f"spill store {self.path} is already open in this process")
            private_dir(self.path, setting="spill_dir", error=SpillError, tighten=True)
            self._db = open_db(self.path, create=True, write_buffer_size=write_buffer)
            open_stores[self._key] = self
            self._closed = False
        private_files(self.path)
        try:
            self._state = read_state(self._db)
        except (plyvel.Error, ValueError) as exc:
            self._state = StoreState()  # never written: close() must not overwrite the meta
            self._closed_without_meta()
            raise read_error(self.path, exc) from exc
        if self._state.missing:
            self._record_loss(self._state, self._state.missing, "at open")
        if sync == "interval":
            self._syncer = threading.Thread(
                target=self._sync_loop, name=f"spill-sync-{self.path.name}", daemon=True
            )
            self._syncer.start()

    # -- counters -----------------------------------------------------------
    def __len__(self) -> int:
        return self._state.records

    @property
    def backlog_bytes(self) -> int:
        """Encoded bytes of every un-acked record (what ``max_bytes`` bounds)."""
        return self._state.nbytes

    @property
    def quarantined(self) -> int:
        """Records moved to the quarantine keyspace since the store was created."""
        return self._state.quarantined

    @property
    def lost(self) -> int:
        """Records the counters expected that LevelDB could not read, ever (persistent)."""
        return self._state.lost

    @property
    def is_intact(self) -> bool:
        """False once the store had unreadable data: then it is quarantined, never deleted.

        Unreadable data means records lost (:attr:`lost`), a LevelDB read error
        on this handle, or tables LevelDB's repair could not read (``lost/``).
        """
        return self.damage is None

    @property
    def damage(self) -> str | None:
        """Why the store is not intact (None while it is)."""
        if self._state.lost:
            return f"{self._state.lost} spilled records lost (LevelDB could not read them)"
        if self._damage is not None:
            return self._damage
        note = damage_note(self.path)
        if note is not None:
            return note
        tables = lost_tables(self.path)
        if tables:
            return f"LevelDB repair set aside unreadable tables: {', '.join(tables)}"
        return None

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest record ever appended (0 if none)."""
        return self._state.next_seq - 1

    @property
    def oldest_created(self) -> float | None:
        """``created`` of the oldest un-acked record (drain lag), or None when empty."""
        if self._state.records <= 0 or self._closed:
            return None
        if not self._oldest_known:
            try:
                oldest = first_created(self._db, self._state.acked)
            except plyvel.Error as exc:  # a gauge must not fail: peek reports the damage
                logger.debug("spill store %s: oldest record unreadable: %s", self.path, exc)
                return None
            self._oldest, self._oldest_known = oldest, True
        return self._oldest

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing ------------------------------------------------------------
    def append(self, record: SpillRecord) -> int:
        """Store one record; return its sequence number.

        Raises :class:`SpillFull` beyond ``max_bytes`` and :class:`SpillError`
        when the store is closed or LevelDB fails; nothing stored is affected.
        """
        value = encode(record)
        size = len(value)
        state = self._state
        with self._lock:
            if self._closed:
                raise SpillError(f"spill store {self.path} is closed")
            if state.appended - state.removed_bytes + size > self.max_bytes:
                raise self._full(size)
            written = self._written + size + WRITE_COST
            if written <= self._quiet_until:  # the common case of _account, inline
                self._written = written
            else:
                self._account(size + WRITE_COST)
            seq = state.next_seq
            cum = state.appended + size
            key = KEY.pack(REC, seq, cum)
            try:
                if self._write_sync:
                    self._db.put(key, value, sync=True)
                else:
                    self._db.put(key, value)
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: write failed: {exc}") from exc
            state.next_seq = seq + 1
            state.appended = cum
            if self._tail_on:
                self._tail.append((seq, key, value))
                self._tail_bytes += size
                if self._tail_bytes > TAIL_BYTES or len(self._tail) > TAIL_RECORDS:
                    self._drop_tail()
            if seq - state.removed == 1:  # it is the only record
                self._oldest, self._oldest_known = record.created, True
        if self._syncer is not None and not self._dirty:
            self._dirty = True
            self._wake.set()
        return seq

    def extend(self, records: Sequence[SpillRecord], *, past_limit: bool = False) -> int:
        """Store ``records`` in one atomic ``write_batch``; return the last sequence number.

        All or nothing: on :class:`SpillFull` or :class:`SpillError` none is stored.
        With no records, returns the newest sequence number already used.
        ``past_limit`` writes them even beyond ``max_bytes`` (accepted messages
        that would otherwise be lost: the memory buffer at exit).
        """
        values = [encode(r) for r in records]
        size = sum(map(len, values))
        state = self._state
        with self._lock:
            if self._closed:
                raise SpillError(f"spill store {self.path} is closed")
            if not values:
                return state.next_seq - 1
            if state.nbytes + size > self.max_bytes and not past_limit:
                raise self._full(size)
            self._account(size + WRITE_COST * len(values))
            first = state.next_seq
            cum = state.appended
            was_empty = state.records == 0
            entries = []
            try:
                with self._db.write_batch(sync=self._write_sync) as wb:
                    pack = KEY.pack
                    for seq, value in enumerate(values, first):
                        cum += len(value)
                        key = pack(REC, seq, cum)
                        wb.put(key, value)
                        entries.append((seq, key, value))
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: write failed: {exc}") from exc
            state.next_seq = first + len(values)
            state.appended = cum
            if self._tail_on:
                self._tail.extend(entries)
                self._tail_bytes += size
                if self._tail_bytes > TAIL_BYTES or len(self._tail) > TAIL_RECORDS:
                    self._drop_tail()
            if was_empty:
                self._oldest, self._oldest_known = records[0].created, True
        if self._syncer is not None and not self._dirty:
            self._dirty = True
            self._wake.set()
        return first + len(values) - 1

    def _drop_tail(self) -> None:
        """The drainer fell behind (or records were quarantined): stop keeping records in
        memory until a peek reaches the newest record again (under ``_lock``)."""
        self._tail_on = False
        self._tail.clear()
        self._tail_bytes = 0

    def _from_tail(self, first: int, limit: int) -> list[tuple[int, bytes, bytes]] | None:
        """Up to ``limit`` records from ``first`` on, from memory; None if it lacks ``first``."""
        with self._lock:
            tail = self._tail
            if not tail or not tail[0][0] <= first <= tail[-1][0]:
                return None
            start = first - tail[0][0]
            return list(islice(tail, start, start + limit))

    def _account(self, cost: int) -> None:
        """Count ``cost`` bytes about to be written (under ``_lock``); SpillFull past the budget."""
        written = self._written + cost
        budget = self.write_budget
        if budget is not None:
            if written > budget:
                raise SpillFull(
                    f"spill store {self.path} is full: this process is a fork-tainted child "
                    f"({forksafe.cause()}) where a store takes at most {budget} bytes "
                    "before it is drained and replaced (LevelDB must never flush here)"
                )
        elif written > forksafe.DEFAULT_WRITE_BUFFER // forksafe.HEADROOM:
            forksafe.mark(f"{written} bytes written to {self.path} (its memtable may switch)")
        self._written = written

    @property
    def spent(self) -> bool:
        """True if anything was written since open (a tainted store is replaced when empty)."""
        return self._written > 0

    def _full(self, size: int) -> SpillFull:
        return SpillFull(
            f"spill store {self.path} is full: {self._state.nbytes} + {size} bytes would "
            f"exceed spill_max_bytes={self.max_bytes}"
        )

    # -- reading ------------------------------------------------------------
    def peek(self, limit: int) -> list[tuple[int, SpillRecord]]:
        """The oldest ``limit`` un-acked records, oldest first, as ``(seq, record)``.

        Removes nothing: the drainer calls :meth:`ack` once the broker has them.
        Undecodable records are quarantined, counted and skipped.
        """
        out: list[tuple[int, SpillRecord]] = []
        if limit <= 0:
            return out
        with self._read_lock:
            self._check_open()
            bad: list[tuple[bytes, bytes, Exception]] = []
            handed: list[tuple[int, bytes, int]] = []
            acked = self._state.acked
            self._handed = None
            recent = self._from_tail(acked + 1, limit)

            def take(pairs: Iterable[tuple[bytes, bytes]]) -> None:
                for key, value in pairs:
                    seq = seq_of(key)
                    try:
                        out.append((seq, decode(value)))
                    except (CorruptRecord, VersionMismatch) as exc:
                        bad.append((key, value, exc))
                        continue
                    handed.append((seq, key, len(value)))
                    if len(out) >= limit:
                        break

            try:
                if recent is not None:  # the drainer keeps up: no LevelDB iterator
                    take((key, value) for _seq, key, value in recent)
                else:
                    with self._db.iterator(start=rkey(acked + 1), stop=REC_END) as it:
                        take(it)
            except plyvel.Error as exc:
                # A table or block LevelDB cannot read.  Hand out what came
                # before it; with nothing before it the store is stuck here.
                error = read_error(self.path, exc)
                if isinstance(error, StoreDamaged):
                    self._damage = str(error)
                if not out:
                    raise error from exc
            if bad:
                self._quarantine(bad)
            if len(out) < limit and not self._tail_on:
                self._tail_on = True  # caught up: keep what is appended from now on
            if not out and not bad and self._state.records:
                self._reset_empty()
            elif handed:
                # Every key from acked+1 to the last one seen was handed out or
                # quarantined: ack() deletes these without walking them again.
                self._handed = (acked, handed)
        return out

    def quarantine(self, seq: int, reason: Exception) -> None:
        """Set record ``seq`` aside, as a corrupt one is (the broker can never take it)."""
        with self._read_lock:
            self._check_open()
            key = find_key(self._db, seq)
            if key is None:
                return
            value = self._db.get(key)
            if value is not None:
                self._quarantine([(key, value, reason)])

    def _quarantine(self, bad: list[tuple[bytes, bytes, Exception]]) -> None:
        state = self._state
        with self._lock:
            self._account(sum(len(v) + WRITE_COST for _k, v, _e in bad))
            after = replace(
                state,
                quarantined=state.quarantined + len(bad),
                removed=state.removed + len(bad),
                removed_bytes=state.removed_bytes + sum(len(v) for _k, v, _e in bad),
            )
            try:
                with self._db.write_batch(sync=self._write_sync) as wb:
                    for key, value, _exc in bad:
                        wb.delete(key)
                        wb.put(QUAR + key[1:], value)
                    wb.put(META_KEY, after.pack())
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: quarantine failed: {exc}") from exc
            state.quarantined, state.removed = after.quarantined, after.removed
            state.removed_bytes = after.removed_bytes
            self._oldest_known = False
            self._drop_tail()  # it must not hand these out again
        metrics.CORRUPT_RECORDS.labels(store="spill").inc(len(bad))
        for key, value, reason in bad:
            logger.error(
                "spill store %s: record %d (%d bytes) quarantined: %s",
                self.path,
                seq_of(key),
                len(value),
                reason,
            )

    def _reset_empty(self) -> None:
        # Counters say records wait but the range is empty: sequence numbers
        # are dense, so these records were lost (LevelDB skipped a table or
        # log it could not read, or dropped a batch when recovering a log).
        with self._lock:
            try:
                if first_key(self._db, self._state.acked) is not None:
                    return  # an append landed after our iterator was made
            except plyvel.Error as exc:
                raise read_error(self.path, exc) from exc
            self._record_loss(self._state, self._state.records, "while draining")

    def _record_loss(self, state: StoreState, n: int, when: str) -> None:
        """Count ``n`` records as lost, persistently, and say so (log + metric)."""
        bound = "" if state.counters_known else "up to "
        after = replace(state, lost=state.lost + n)
        after.mark_empty()
        try:
            self._db.put(META_KEY, after.pack(), sync=True)
        except plyvel.Error as exc:
            logger.error("spill store %s: cannot record the loss: %s", self.path, exc)
        state.lost, state.removed = after.lost, after.removed
        state.removed_bytes = after.removed_bytes
        state.missing = state.missing_bytes = 0
        metrics.RECORDS_LOST.inc(n)
        logger.error(
            "celery-durable: spill store %s: %s%d spilled records lost %s: the counters "
            "expected them but LevelDB cannot read them (damaged table or log); "
            "the store will be quarantined, not deleted",
            self.path,
            bound,
            n,
            when,
        )

    def ack(self, upto_seq: int) -> None:
        """Delete every record with ``seq <= upto_seq`` (one atomic batch)."""
        state = self._state
        with self._read_lock:
            self._check_open()
            with self._lock:
                # Under the lock: peek() can see a record whose append has not
                # yet advanced next_seq; clamping without the lock lost that ack.
                upto_seq = min(upto_seq, state.next_seq - 1)
            if upto_seq <= state.acked:
                return
            # No accounting: each record's WRITE_COST reserved its tombstone
            # and the meta, and deletes in a store that never flushed cannot
            # start a compaction (there is no table to compact).
            keys: list[bytes] = []
            freed = 0
            handed, self._handed = self._handed, None
            try:
                if handed is not None and handed[0] == state.acked and upto_seq <= handed[1][-1][0]:
                    for seq, key, size in handed[1]:
                        if seq > upto_seq:
                            break
                        keys.append(key)
                        freed += size
                else:
                    freed = self._keys_upto(upto_seq, keys)
                with self._lock:
                    after = replace(
                        state,
                        acked=upto_seq,
                        removed=state.removed + len(keys),
                        removed_bytes=state.removed_bytes + freed,
                    )
                    with self._db.write_batch(sync=self._write_sync) as wb:
                        for key in keys:
                            wb.delete(key)
                        wb.put(META_KEY, after.pack())
                    state.acked = after.acked
                    state.removed, state.removed_bytes = after.removed, after.removed_bytes
                    self._oldest_known = False
                    tail = self._tail
                    while tail and tail[0][0] <= upto_seq:
                        self._tail_bytes -= len(tail.popleft()[2])
            except plyvel.Error as exc:
                raise SpillError(f"spill store {self.path}: ack failed: {exc}") from exc

    def _keys_upto(self, upto_seq: int, keys: list[bytes]) -> int:
        """Append the keys from the head to ``upto_seq`` to ``keys``; return their bytes."""
        freed = 0
        with self._db.iterator(start=rkey(self._state.acked + 1), stop=rkey(upto_seq + 1)) as it:
            for key, value in it:
                keys.append(key)
                freed += len(value)
                if seq_of(key) >= upto_seq:
                    # Stop here: stepping on would open the next table,
                    # which may be the unreadable one peek stopped at.
                    break
        return freed

    # -- maintenance --------------------------------------------------------
    def compact(self) -> None:
        """Compact the whole keyspace so a drained backlog gives its disk space back.

        The bounds are explicit on purpose: plyvel's ``compact_range()`` without
        arguments passes *empty* keys, not NULL, so LevelDB compacts the range
        ``["", ""]``, i.e. nothing (measured: 5.4 MB of tombstoned tables stayed).
        """
        self._check_open()
        if self.write_budget is not None:
            return  # a tainted store: compacting would wait for ever (and nothing is on disk)
        forksafe.mark(f"compacted {self.path}")
        try:
            self._db.compact_range(start=b"\x00", stop=b"\xff")
        except plyvel.Error as exc:
            raise SpillError(f"spill store {self.path}: compaction failed: {exc}") from exc
        private_files(self.path)

    def quarantine_items(self) -> list[tuple[int, bytes]]:
        """``(seq, encoded bytes)`` of every quarantined record, for inspection."""
        self._check_open()
        with self._db.iterator(prefix=QUAR) as it:
            return [(seq_of(k), v) for k, v in it]

    def _check_open(self) -> None:
        if self._closed:
            raise SpillError(f"spill store {self.path} is closed")

    def _sync_loop(self) -> None:
        # Sleeps on an event while nothing is written; otherwise one fsync'ed
        # write per interval, which makes every earlier write durable too.
        while True:
            self._wake.wait()
            if self._stop.wait(self.sync_interval):
                return
            self._wake.clear()
            self._dirty = False
            with self._lock:
                if self._closed:
                    return
                try:
                    self._db.put(META_KEY, self._state.pack(), sync=True)
                except plyvel.Error as exc:  # pragma: no cover - disk failure
                    logger.error("spill store %s: interval sync failed: %s", self.path, exc)

    def _closed_without_meta(self) -> None:
        with self._read_lock, self._lock:
            self._closed = True
            self._db.close()
            with open_lock:
                if open_stores.get(self._key) is self:
                    del open_stores[self._key]

    def close(self) -> None:
        """Close the store (idempotent); the meta is written (and synced) once more."""
        self._stop.set()
        self._wake.set()
        syncer = self._syncer
        if syncer is not None and syncer is not threading.current_thread():
            syncer.join()
        with self._read_lock, self._lock:  # never under a drainer's open iterator
            if self._closed:
                return
            try:
                self._db.put(META_KEY, self._state.pack(), sync=self.sync != "none")
            except plyvel.Error as exc:
                logger.error("spill store %s: final meta write failed: %s", self.path, exc)
            finally:
                self._closed = True
                self._db.close()
                with open_lock:
                    if open_stores.get(self._key) is self:
                        del open_stores[self._key]
        private_files(self.path)

    def destroy(self, *, force: bool = False) -> bool:
        """Close the store and delete its directory if it is empty; True if deleted.

        Emptiness is checked on the data (a seek), not the counters, so a
        racing append or a counter that is off can never make this lose a
        record: a store that still holds one is only closed, and a warning
        logged (it will be adopted and drained later).  ``force`` deletes a
        store that still holds records.

        A store that is not :attr:`is_intact` (it had unreadable data) is
        never deleted, ``force`` or not: it is closed and moved to
        ``quarantine/`` (:func:`~.directory.quarantine_store`), and False returned.
        """
        if not self._closed and not force:
            with self._read_lock, self._lock:
                try:
                    left = first_key(self._db, self._state.acked) if not self._closed else None
                except plyvel.Error as exc:
                    left = None  # unreadable from the head on: quarantined below
                    self._damage = str(read_error(self.path, exc))
            if left is not None:
                logger.warning(
                    "spill store %s still holds records (from seq %d): closed, not deleted",
                    self.path,
                    seq_of(left),
                )
                self.close()
                return False
        damage = self.damage
        self.close()
        if damage is not None:
            quarantine_store(self.path, damage)
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True

    def set_aside(self, reason: str) -> Path:
        """Close the store and move it to ``quarantine/`` (never deleted); return where.

        For a store that raised :class:`StoreDamaged` while in use: whatever
        :meth:`destroy` would find at its head, it is not drained here again.
        """
        if self._damage is None:
            self._damage = reason
        damage = self.damage or reason
        self.close()
        return quarantine_store(self.path, damage)

    def __enter__(self) -> SpillStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<SpillStore {self.path} closed>"
        return f"<SpillStore {self.path} {len(self)} records, {self.backlog_bytes} bytes>"
