"""The dump queue: between a failing task and the dump store, crash-safe.

:meth:`DumpQueue.put` encodes the dump once (the store's codec) and appends it to
this process's write-ahead log (:mod:`.wal`) before it returns, so a final
failure is on local disk before the ``task_failure`` handler returns.  The log
also keeps the dumps of its own segments in memory, up to twice
``capacity_bytes``, so a flush does not read back what this process just wrote;
beyond that (a store that has been failing) and for adopted logs it reads the
segments from disk.

Batching is the dlqdump model, as before the log existed: a batch is written when
it holds ``capacity_bytes`` or ``flush_interval`` seconds after its first item,
whichever comes first, and on worker shutdown and interpreter exit.  A flush
seals the log's open segment, writes each sealed segment to the store as one
batch, and deletes a segment only after the store accepted it.  Segments of a
process that died are adopted (:meth:`DumpQueue.adopt`) and flushed the same way;
the flusher looks for such orphans every ``adopt_interval`` seconds as well.

Threads and processes: one daemon flusher thread per queue, started lazily
(``put`` wakes it only for the first dump of a batch, or at capacity).  A
forked child (a prefork pool process) must not use the parent's log nor its
thread (it does not exist in the child): :mod:`celery_durable.dlq.capture` drops
every queue in the child after ``fork``, so each child builds its own log.

Write failures are never raised into the worker: the segments stay on disk, the
failure is logged with the task ids and counted in
``celery_durable_dump_write_errors``, and the write is retried with exponential
backoff (``flush_interval`` doubling up to 30 s).  A final flush that fails
leaves the segments for the next process.  Only a dump the log itself cannot
take (disk full, ``wal_max_bytes`` reached, unwritable directory) is written to
the log at ERROR level as one JSON line (``dlq: DROPPED DUMP {...}``) that
``celery durable dlq import`` reads back.  Nothing is dropped without a trace.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from kombu.utils.json import dumps as json_dumps

from .. import metrics
from . import retention
from .base import DumpEntry, DumpStore
from .wal import DumpWAL, Segment, _Owner, discard, find_orphans, read_segment, wal_dir

__all__ = ["DumpQueue", "log_dropped"]

logger = logging.getLogger(__name__)

MAX_BACKOFF = 30.0

#: Queues that started a flusher thread: a forked child has none of their threads.
_started: weakref.WeakSet[DumpQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_started):
        queue._running = False
    _started.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class DumpQueue:
    """Log dumps locally at once; write them to a store in batches from a background thread."""

    def __init__(
        self,
        store: DumpStore | Callable[[], DumpStore],
        *,
        capacity_bytes: int = 1 << 20,
        flush_interval: float = 1.0,
        wal_directory: Path | None = None,
        wal_max_bytes: int = 1 << 30,
        adopt_interval: float = 30.0,
    ) -> None:
        self._store_or_factory = store
        self._store: DumpStore | None = store if isinstance(store, DumpStore) else None
        self.capacity_bytes = capacity_bytes
        self.flush_interval = flush_interval
        self.wal_max_bytes = wal_max_bytes
        self.adopt_interval = adopt_interval
        self._wal_directory = wal_directory
        self._wal: DumpWAL | None = None
        self._cond = threading.Condition(threading.Lock())
        self._write_lock = threading.Lock()  # one flush at a time
        self._adopted: list[_Owner] = []
        self._bytes = 0  # bytes appended since the last flush
        self._first_at: float | None = None
        self._retry_at = 0.0
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._running = False  # a flusher thread runs (set and cleared under the lock)
        self._stopping = False

    @property
    def store(self) -> DumpStore:
        if self._store is None:
            factory = self._store_or_factory
            assert callable(factory)
            self._store = factory()
        return self._store

    @property
    def wal_directory(self) -> Path:
        if self._wal_directory is None:
            self._wal_directory = wal_dir(self.store.url)
        return self._wal_directory

    def _open_wal(self) -> DumpWAL:
        """Called with the lock held."""
        if self._wal is None:
            self._wal = DumpWAL(
                self.wal_directory,
                store_url=self.store.url,
                max_bytes=self.wal_max_bytes,
                keep_bytes=2 * self.capacity_bytes,
            )
        return self._wal

    def __len__(self) -> int:
        """Our dumps not yet in the store (adopted ones not counted)."""
        wal = self._wal
        return wal.records if wal is not None else 0

    @property
    def pending_bytes(self) -> int:
        wal = self._wal
        return wal.nbytes if wal is not None else 0

    def put(self, entry: DumpEntry) -> None:
        """Encode ``entry`` and append it to the local log; the store is written later.

        When the log cannot take it the dump is logged as a ``DROPPED DUMP`` line.
        """
        dump = self.store.encode(entry)
        with self._cond:
            try:
                size = (self._wal or self._open_wal()).append(dump)
            except OSError as exc:
                log_dropped(entry, f"the dump log cannot take it: {exc}")
                return
            self._bytes += size
            first = self._first_at is None
            if first:
                self._first_at = time.monotonic()
            if self._stopping or not self._running:
                self._ensure_thread()
            if first or self._bytes >= self.capacity_bytes:
                self._cond.notify()

    def adopt(self) -> int:
        """Take over the logs of dead processes (same store); return how many were found.

        Their segments are flushed by this queue's thread, at once; the thread
        (started here if need be) looks for more every ``adopt_interval``.
        """
        owners = find_orphans(self.wal_directory)
        if owners:
            logger.info(
                "dlq: adopting the dump logs of %d dead process(es) in %s",
                len(owners),
                self.wal_directory,
            )
        with self._cond:
            self._adopted.extend(owners)
            self._ensure_thread()
            self._cond.notify()
        return len(owners)

    def _ensure_thread(self) -> None:
        """Called with the lock held.  A queue used after :meth:`close` flushes again."""
        if self._thread is threading.current_thread():
            return  # the flusher's own orphan scan: never undo a close()
        self._stopping = False  # a thread still running carries on
        if not self._running:
            self._running = True
            _started.add(self)
            self._thread = threading.Thread(
                target=self._run, name="celery-durable-dlq-flush", daemon=True
            )
            self._thread.start()

    def _due_in(self, now: float) -> float | None:
        """Seconds until the next flush is due (<= 0: now); None when there is nothing."""
        if self._adopted:
            due = now
        elif not len(self) or self._first_at is None:
            return None
        elif self._bytes >= self.capacity_bytes:
            due = now
        else:
            due = self._first_at + self.flush_interval
        return max(due, self._retry_at) - now

    def _run(self) -> None:
        try:
            self._loop()
        finally:  # an unexpected exit: the next put() starts a new thread
            with self._cond:
                if self._thread is threading.current_thread():
                    self._running = False

    def _loop(self) -> None:
        next_scan = time.monotonic() + self.adopt_interval
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        self._running = False
                        return
                    now = time.monotonic()
                    wait = self._due_in(now)
                    due = wait is not None and wait <= 0
                    if due or now >= next_scan:
                        break
                    self._cond.wait(min(math.inf if wait is None else wait, next_scan - now))
            try:
                if now >= next_scan:
                    next_scan = now + self.adopt_interval
                    due = self.adopt() > 0 or due
                if due:
                    self.flush()
            except Exception:  # never let the flusher die
                logger.exception("dlq: unexpected error in the dump flusher")

    def flush(self, timeout: float | None = None) -> bool:
        """Write every sealed segment to the store; True when nothing is left to write.

        Never raises: a failed write is logged, counted and retried later.
        """
        if not self._write_lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            with self._cond:
                work: list[tuple[_Owner | None, Path]] = []
                if self._wal is not None:
                    self._wal.seal()
                    work = [(None, path) for path in self._wal.segments()]
                self._bytes = 0
                self._first_at = None
                adopted = list(self._adopted)
            for owner in adopted:
                work.extend((owner, path) for path in owner.segments())
            for who, path in work:
                if not self._write_segment(who, path):
                    return False
            with self._cond:
                for owner in adopted:
                    self._adopted.remove(owner)
                    owner.release()
                self._failures = 0
                self._retry_at = 0.0
                return not len(self) and not self._adopted
        finally:
            self._write_lock.release()

    def _write_segment(self, owner: _Owner | None, path: Path) -> bool:
        kept = self._wal.kept(path) if owner is None and self._wal is not None else None
        try:
            segment = kept or read_segment(path)
        except FileNotFoundError:
            return True
        except OSError as exc:
            self._failed(Segment(path, []), exc)
            return False
        started = time.perf_counter()
        if segment.dumps:
            try:
                self.store.write_encoded(segment.dumps)
            except Exception as exc:
                self._failed(segment, exc)
                return False
            metrics.DUMP_FLUSH_DURATION.observe(time.perf_counter() - started)
            metrics.DUMP_FLUSHES.inc()
            metrics.DUMP_BYTES.inc(sum(len(d.payload) for d in segment.dumps))
            for name, n in Counter(d.task_name for d in segment.dumps).items():
                metrics.DUMPED.labels(task=name).inc(n)
            retention.after_flush(self.store)
        if owner is None and self._wal is not None:
            self._wal.discard(segment)
        else:
            discard(segment)
        return True

    def _failed(self, segment: Segment, exc: Exception) -> None:
        metrics.DUMP_WRITE_ERRORS.inc()
        with self._cond:
            self._failures += 1
            delay = min(self.flush_interval * 2**self._failures, MAX_BACKOFF)
            self._retry_at = time.monotonic() + max(delay, 0.05)
            if self._first_at is None:
                self._first_at = time.monotonic()
        logger.error(
            "dlq: cannot write %d dumps to %s (%s); they stay in %s; retrying in %.1fs; "
            "task ids: %s",
            len(segment.dumps),
            getattr(self.store, "url", self.store),
            exc,
            segment.path,
            delay,
            ", ".join(d.task_id for d in segment.dumps),
        )

    def close(self, timeout: float = 10.0) -> bool:
        """Final flush (worker shutdown, exit).  What it cannot write stays on disk."""
        ok = self.flush(timeout=timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            wal, self._wal = self._wal, None
            adopted, self._adopted = self._adopted, []
            left = wal.records if wal is not None else 0
        if wal is not None:
            wal.close()
        for owner in adopted:
            owner.close()
        if not ok:
            logger.error(
                "dlq: %d dumps could not be written to %s at shutdown; they stay in %s "
                "and the next worker process started on this host writes them",
                left,
                getattr(self.store, "url", self.store),
                self.wal_directory,
            )
        return ok


def log_dropped(entry: DumpEntry, why: str) -> None:
    """The last resort: the whole dump as one JSON line in the log (``dlq import`` reads it)."""
    logger.error("dlq: DROPPED DUMP (%s) %s", why, json_dumps(entry.to_dict()))
