"""Where each publish goes: the broker now, the memory buffer, or the spill store.

One :class:`PublishRouter` exists per (process, broker).  It owns the memory
buffer, the process's LevelDB spill store and ``disk_mode``, and it keeps the
order invariants below.  It starts no thread and does no I/O of its own beyond
the store: the transport's channel publishes to the broker (the router says
when it may: :attr:`PublishRouter.sends_direct`), and the
:class:`~celery_durable.transport.drainer.Drainer` forwards what the router
holds.  Two hooks connect it to the drainer: :attr:`~PublishRouter.on_work`
(something is waiting: start or wake the drainer) and
:attr:`~PublishRouter.on_hurry` (a publisher waits for room: try the broker now).
Nothing in here knows which broker it is; the error tuple of a failed direct
publish is given.

Invariants (they are what "never lose, never reorder" rests on):

* ``disk_mode`` is True while anything of this process sits on disk (always
  in ``wal`` mode).  While it is True every new message goes to disk behind the
  backlog; it is cleared, under ``lock``, only when the store is empty.
* In ``buffered`` mode the buffer is older than anything on disk: when it must
  spill (buffer full, broker down) the *whole* buffer moves to disk first, in
  order, then the new message.  A batch the drainer is sending stays in the
  buffer until the broker has it; if it was moved to disk meanwhile the
  generation counter tells, and a successfully sent batch is then also on disk:
  at-least-once, the one place buffered mode can duplicate.
* A record leaves the store (``ack``) only after the broker has it.  A crash
  between the two replays it: duplicates, never loss.
* A message goes to the broker past the router only while nothing of this
  process is ahead of it: in ``direct`` mode while ``disk_mode`` is False, and
  when the store cannot take it (full, or the message is bigger than
  ``spill_max_bytes``) only if buffer and store are empty.
* A publish never waits without a bound for a broker: when the store is full it
  waits for the drainer's next attempt (cut short: :attr:`on_hurry`) at most
  ``publish_timeout`` with ``spill_when_full="raise"``; with ``"block"`` it waits
  for room as long as the drainer makes progress, but a message that can never
  fit fails at once when the broker is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import metrics
from ..exceptions import SpillError, SpillFull
from ..spill import SpillRecord, SpillStore, StoreLocked, encode, new_store_path
from .breaker import Breaker
from .options import DurableOptions

__all__ = ["RECORD_OVERHEAD", "RETRY_FLOOR", "PublishRouter", "Send"]

logger = logging.getLogger(__name__)

#: Rough per-record overhead beyond the body, for the buffer's byte budget.
RECORD_OVERHEAD = 512
#: A publisher waiting for room asks the drainer to try the broker at once, but
#: not within this many seconds of a failed attempt (the broker is down *now*):
#: a fleet of producers with full stores must not hammer a dead broker.
RETRY_FLOOR = 0.1
#: Seconds between "publisher blocked" warnings with ``spill_when_full="block"``.
BLOCKED_LOG_INTERVAL = 10.0

#: Publish records to the broker now, in order; raise one of the broker errors if
#: it did not take them all.
Send = Callable[[Sequence[SpillRecord]], Any]


def _noop() -> None:
    return None


class PublishRouter:
    """Routes publishes between broker, buffer and spill store (no threads, no network)."""

    def __init__(
        self,
        options: DurableOptions,
        store_dir: Path,
        breaker: Breaker,
        broker_errors: tuple[type[BaseException], ...],
    ) -> None:
        self.options = options
        self.mode = options.publish_mode
        self.store_dir = store_dir
        self.breaker = breaker
        self.broker_errors = broker_errors
        #: Called (outside ``lock``) when something waits for the drainer.
        self.on_work: Callable[[], None] = _noop
        #: Called (outside ``lock``) when a publisher waits for room.
        self.on_hurry: Callable[[], None] = _noop
        self.lock = threading.Lock()
        self._room = threading.Condition(self.lock)
        self._buffer: deque[SpillRecord] = deque()
        self._buffer_bytes = 0
        self._buffer_gen = 0
        self._store: SpillStore | None = None
        # Drain attempts: how many ended, whether the last one reached the
        # broker, and when the last failure was (publishers waiting for room).
        self._attempts = 0
        self._last_ok = True
        self._failed_at = float("-inf")
        self.disk_mode = self.mode == "wal"
        #: Set by :meth:`close`: this router is done (its process shuts down).
        self.closed = False

    # -- the publisher's side ------------------------------------------------------
    @property
    def sends_direct(self) -> bool:
        """True if a publish may go to the broker now (direct mode, nothing on disk)."""
        return self.mode == "direct" and not self.disk_mode

    def accept(
        self, record: SpillRecord, reason: str | None = None, direct: Send | None = None
    ) -> None:
        """Take responsibility for ``record``: buffer or disk.  Raises SpillFull/SpillError.

        ``direct`` publishes to the broker; it is used only if the store cannot
        take the record and nothing of this process is ahead of it.
        """
        if self.mode == "buffered":
            size = len(record.body) + RECORD_OVERHEAD
            with self.lock:
                if (
                    not self.disk_mode
                    and self._buffer_bytes + size <= self.options.buffer_max_bytes
                ):
                    self._buffer.append(record)
                    self._buffer_bytes += size
                    metrics.BUFFERED_BYTES.set(self._buffer_bytes)
                    first = len(self._buffer) == 1
                else:
                    first = None
            if first is not None:
                if first:
                    self.on_work()
                return
            reason = "buffer full" if not self.disk_mode else reason
        if reason is None:
            reason = "backlog" if self.disk_mode else "buffered"
        self._store_records([record], reason, direct)

    def accept_batch(
        self, records: Sequence[SpillRecord], reason: str | None = None, direct: Send | None = None
    ) -> None:
        """:meth:`accept` for a batch: all in the buffer, or one write batch on disk."""
        if not records:
            return
        if self.mode == "buffered":
            size = sum(len(r.body) for r in records) + RECORD_OVERHEAD * len(records)
            with self.lock:
                if (
                    not self.disk_mode
                    and self._buffer_bytes + size <= self.options.buffer_max_bytes
                ):
                    self._buffer.extend(records)
                    self._buffer_bytes += size
                    metrics.BUFFERED_BYTES.set(self._buffer_bytes)
                    accepted = True
                else:
                    accepted = False
            if accepted:
                self.on_work()
                return
            reason = "buffer full" if not self.disk_mode else reason
        if reason is None:
            reason = "backlog" if self.disk_mode else "buffered"
        self._store_records(records, reason, direct)

    def spill(self, record: SpillRecord, reason: str, direct: Send | None = None) -> None:
        """Append ``record`` to this process's store, behind anything waiting."""
        self._store_records([record], reason, direct)

    def trip(self, exc: BaseException) -> None:
        """The broker failed a publish: publishes go to disk until the drainer sees it again."""
        self.breaker.trip(exc)
        self.disk_mode = True

    # -- storing, and what happens when the store is full --------------------------------
    def _store_records(
        self, records: Sequence[SpillRecord], reason: str, direct: Send | None
    ) -> None:
        deadline: float | None = None
        blocked_since: float | None = None
        while True:
            try:
                with self.lock:
                    self.disk_mode = True
                    store = self._open_store()
                    if self._buffer:  # older than anything on disk: it goes first
                        self._buffer_to_disk_locked(reason)
                    if len(records) == 1:
                        store.append(records[0])
                    else:
                        store.extend(records)
                break
            except SpillFull as full:
                metrics.SPILL_FULL.inc()
                size = sum(len(encode(r)) for r in records)
                never_fits = size > self.options.spill_max_bytes
                if direct is not None and self.nothing_ahead():
                    # The broker may take what the store cannot (it may be back
                    # while the breaker is still open): nothing of ours is ahead.
                    try:
                        direct(records)
                    except self.broker_errors as exc:
                        self.trip(exc)
                        if never_fits:
                            raise SpillFull(
                                f"{_what(records)} of {size} bytes can never fit in the spill "
                                f"store (spill_max_bytes={self.options.spill_max_bytes}) and the "
                                f"broker did not take it: {type(exc).__name__}: {exc}"
                            ) from exc
                    else:
                        self.on_hurry()  # the broker answered: let the drainer close the breaker
                        return
                if self.options.spill_when_full == "raise":
                    if deadline is None:
                        deadline = time.monotonic() + self.options.publish_timeout
                    if self._await_attempt(deadline, hurry=True) != "ok":
                        raise self._refused(full, records, size, never_fits) from full
                    continue
                if never_fits and len(records) > 1:
                    # A batch bigger than the whole store: one record at a time,
                    # each with a single publish's rules.
                    for record in records:
                        self._store_records([record], reason, direct)
                    return
                outcome = self._await_attempt(None, hurry=blocked_since is None)
                if never_fits and (
                    outcome == "failed" or (outcome == "timeout" and self.breaker.is_open)
                ):
                    raise self._refused(full, records, size, never_fits) from full
                blocked_since = self._log_blocked(blocked_since)
        _spilled(reason).inc(len(records))
        self.on_work()

    def _await_attempt(self, deadline: float | None, hurry: bool) -> str:
        """Wait for the drainer's next attempt on the broker: ``ok``, ``failed`` or ``timeout``.

        ``hurry`` asks the drainer to try at once (cutting its backoff short),
        but not within :data:`RETRY_FLOOR` of a failed attempt: with a
        ``deadline`` (``raise``) that failure is the answer, without one
        (``block``) the hurry waits out the rest of the floor.  Without a
        ``deadline`` waits up to a second, so a blocked caller can log and look again.
        """
        with self.lock:
            floor = RETRY_FLOOR - (time.monotonic() - self._failed_at) if not self._last_ok else 0
            seen = self._attempts
        if hurry:
            if floor > 0:
                if deadline is not None:
                    return "failed"
                time.sleep(floor)
            self.on_hurry()
        end = time.monotonic() + 1.0 if deadline is None else deadline
        with self._room:
            while self._attempts == seen:
                timeout = end - time.monotonic()
                if timeout <= 0:
                    return "timeout"
                self._room.wait(timeout)
            return "ok" if self._last_ok else "failed"

    def _refused(
        self, full: SpillFull, records: Sequence[SpillRecord], size: int, never_fits: bool
    ) -> SpillFull:
        if never_fits:
            return SpillFull(
                f"{_what(records)} of {size} bytes can never fit in the spill store "
                f"(spill_max_bytes={self.options.spill_max_bytes}) and messages published "
                "before it still wait for the broker"
            )
        return SpillFull(f"{full}; the broker is still unreachable")

    def _log_blocked(self, since: float | None) -> float:
        now = time.monotonic()
        if since is None:
            return now
        if now - since > BLOCKED_LOG_INTERVAL:
            logger.warning(
                "celery-durable: spill store full, publisher blocked %.0f s", now - since
            )
            return now
        return since

    def nothing_ahead(self) -> bool:
        """True if nothing of this process waits for the broker (buffer and store empty)."""
        store = self._store
        return not self._buffer and (store is None or not len(store))

    # -- the store ------------------------------------------------------------------
    @property
    def store(self) -> SpillStore | None:
        """This process's own store, if it was opened."""
        return self._store

    def _open_store(self) -> SpillStore:
        if self._store is None:
            try:
                self._store = SpillStore(
                    new_store_path(self.store_dir),
                    max_bytes=self.options.spill_max_bytes,
                    sync=self.options.spill_sync,
                    sync_interval=self.options.spill_sync_interval,
                )
            except StoreLocked as exc:  # pragma: no cover - the name is unique per process
                raise SpillError(str(exc)) from exc
        return self._store

    def reopen(self, store: SpillStore) -> SpillStore:
        """Open ``store`` again after a disk error closed it (raises SpillError while it fails)."""
        with self.lock:
            fresh = SpillStore(
                store.path,
                max_bytes=self.options.spill_max_bytes,
                sync=self.options.spill_sync,
                sync_interval=self.options.spill_sync_interval,
            )
            if store is self._store:
                self._store = fresh
        return fresh

    # -- the drainer's side ------------------------------------------------------------
    def buffer_head(self, limit: int) -> tuple[int, list[SpillRecord]]:
        """The oldest ``limit`` buffered records and the buffer's generation."""
        with self.lock:
            size = min(len(self._buffer), limit)
            return self._buffer_gen, [self._buffer[i] for i in range(size)]

    def buffer_sent(self, gen: int, count: int) -> None:
        """The broker has the first ``count`` buffered records (unless the buffer moved)."""
        with self.lock:
            if gen == self._buffer_gen:
                for _ in range(count):
                    record = self._buffer.popleft()
                    self._buffer_bytes -= len(record.body) + RECORD_OVERHEAD
                metrics.BUFFERED_BYTES.set(self._buffer_bytes)

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def buffer_to_disk(self, reason: str, past_limit: bool = False) -> None:
        """Move the whole buffer to disk, in order (broker down, shutdown).  Raises SpillError.

        ``past_limit``: even beyond ``spill_max_bytes`` (at exit, where the
        buffer would otherwise be lost).
        """
        with self.lock:
            self._buffer_to_disk_locked(reason, past_limit)

    def _buffer_to_disk_locked(self, reason: str, past_limit: bool = False) -> None:
        self.disk_mode = True
        if not self._buffer:
            return
        records = list(self._buffer)
        # SpillFull: the buffer stays, in order
        self._open_store().extend(records, past_limit=past_limit)
        self._buffer.clear()
        self._buffer_bytes = 0
        self._buffer_gen += 1
        metrics.BUFFERED_BYTES.set(0)
        _spilled(reason).inc(len(records))

    def leave_disk_mode(self) -> None:
        """Publish directly (or buffer) again if the store is empty; never in wal mode.

        In a fork-tainted process (:mod:`celery_durable.spill.forksafe`) an emptied
        store is also replaced: its write buffer only grows until it is closed.
        """
        with self.lock:
            store = self._store
            tainted = store is not None and store.write_budget is not None
            if store is not None and tainted and store.spent and not len(store):
                self._store = None
                store.destroy()
            if self.mode != "wal" and (self._store is None or not len(self._store)):
                self.disk_mode = False

    def set_aside(self, store: SpillStore, reason: str) -> None:
        """Quarantine the damaged own ``store``; the next spill opens a fresh one.

        Raises SpillError if it cannot be moved aside (it is dropped all the same).
        """
        with self.lock:
            if store is self._store:
                self._store = None
        store.set_aside(reason)

    def attempted(self, ok: bool) -> None:
        """The drainer tried the broker (``ok``: it answered); wakes publishers waiting for room."""
        with self._room:
            self._attempts += 1
            self._last_ok = ok
            if not ok:
                self._failed_at = time.monotonic()
            self._room.notify_all()

    def backlog(self) -> int:
        """Records of this process not yet at the broker (buffer and own store)."""
        store = self._store
        return len(self._buffer) + (len(store) if store is not None else 0)

    def close(self) -> None:
        """Close the own store, or delete it if it is empty (the buffer must be moved first)."""
        with self.lock:
            store, self._store = self._store, None
            self.closed = True
        if store is not None:
            if len(store):
                store.close()
            else:
                store.destroy()


def _what(records: Sequence[SpillRecord]) -> str:
    return "a message" if len(records) == 1 else f"a batch of {len(records)} messages"


_SPILLED_BY_REASON: dict[str, Any] = {}


def _spilled(reason: str) -> Any:
    """The SPILLED counter for ``reason`` (``labels()`` takes a lock: not per publish)."""
    child = _SPILLED_BY_REASON.get(reason)
    if child is None:
        child = _SPILLED_BY_REASON[reason] = metrics.SPILLED.labels(reason=reason)
    return child
