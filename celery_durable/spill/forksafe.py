"""LevelDB is not fork-safe: know when this process is a child it can hang in.

LevelDB's default Env starts one background thread per process, the first
time a database flushes its memtable or compacts, and remembers that in a
process-global flag.  After ``fork()`` the child inherits the flag but not the
thread: in a child of a process whose LevelDB did background work, the flush
that *any* database's first memtable switch (``write_buffer_size``, 4 MB by
default) schedules never runs, so the next switch (~8 MB written since open)
waits for ever, and so does closing the database (measured:
``tests/chaos/test_spill_fork.py``, ``tests/integration/test_prefork_fork_safety.py``).

This module tracks, conservatively, whether this process's LevelDB may have
started that thread (:func:`mark`: a store opened with existing data, more than
half of :data:`DEFAULT_WRITE_BUFFER` written to one store since it was opened,
counting a reserve for each record's tombstone and meta, or a compaction), and
marks a child forked after that as *tainted* (``os.register_at_fork``).  In a
tainted process the spill store never lets LevelDB do background work: new
stores get a write buffer large enough that the memtable never switches
(:func:`write_buffer_for`; it costs memory up to the bytes written to the
store), and stores with existing data are not adopted
(:func:`tainted`: the drainer leaves them to an untainted process).

The right fix is to keep LevelDB out of processes that fork (the prefork main
process never adopts: :mod:`celery_durable.worker`); this is defence in depth
for the shapes we cannot see (an app that spills in a master, then forks).
"""

from __future__ import annotations

import logging
import os

__all__ = [
    "DEFAULT_WRITE_BUFFER",
    "MAX_WRITE_BUFFER",
    "cause",
    "mark",
    "tainted",
    "warn_once",
    "write_buffer_for",
]

logger = logging.getLogger(__name__)

#: LevelDB's default ``write_buffer_size``: more than this written to one
#: database since it was opened may have switched its memtable (a flush).
DEFAULT_WRITE_BUFFER = 4 << 20
#: LevelDB clamps ``write_buffer_size`` to at most 1 GiB.
MAX_WRITE_BUFFER = 1 << 30
#: Arena blocks waste up to a quarter, skiplist nodes add more: a store's
#: accounted bytes are kept below (tainted) or marked at (untainted) half its
#: write buffer.  Deletes alone never mark: in a store opened empty that never
#: flushed there is no table a compaction could work on, so acknowledging a
#: prefork main process's own spills does not taint every later child.
HEADROOM = 2

#: Why this process's LevelDB may have started its background thread (None: it has not).
_started: str | None = None
#: Why this process is a tainted child (None: it is not).
_tainted: str | None = None
_warned = False


def mark(reason: str) -> None:
    """This process's LevelDB may have started its background thread (``reason``: what)."""
    global _started
    if _started is None:  # a race between two threads only picks which reason is kept
        _started = f"{reason} (pid {os.getpid()})"


def tainted() -> bool:
    """True in a child forked after its parent's LevelDB may have done background work."""
    return _tainted is not None


def cause() -> str | None:
    """Why this process is tainted (None if it is not)."""
    return _tainted


def write_buffer_for(max_bytes: int) -> int:
    """The ``write_buffer_size`` of a new store in a tainted process (never switches)."""
    return min(MAX_WRITE_BUFFER, max(DEFAULT_WRITE_BUFFER, HEADROOM * max_bytes + (16 << 20)))


def warn_once(what: str) -> None:
    """Log, once per process, that this process is tainted and what that changes."""
    global _warned
    if _warned or _tainted is None:
        return
    _warned = True
    logger.warning(
        "celery-durable: pid %d was forked from a process whose LevelDB may have started "
        "its background thread (%s); LevelDB is not fork-safe, so here %s. "
        "Spill stores in this process never flush their memtable (memory up to the bytes "
        "spilled) and stores of dead processes are left to processes that were not forked "
        "so (see the FAQ: which processes adopt spill stores)",
        os.getpid(),
        _tainted,
        what,
    )


def _after_fork_in_child() -> None:
    global _tainted, _warned
    # A child of a tainted process is tainted too: the flag came down with it.
    if _tainted is None and _started is not None:
        _tainted = _started
    _warned = False


os.register_at_fork(after_in_child=_after_fork_in_child)
