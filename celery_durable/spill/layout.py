"""The on-disk layout of a spill store, and opening one safely.

One LevelDB holds three keyspaces:

* ``b"r" + seq + cum`` -> the encoded record: the backlog.  ``seq`` is an
  8-byte big-endian integer, so key order is append order (seeks and range
  ends use the 9-byte prefix ``b"r" + seq``).  ``cum`` (8 bytes) is the total
  of encoded record bytes ever appended, *including* this record.
* ``b"q" + seq + cum`` -> the same bytes, moved here when the record failed to decode.
* ``b"m"`` -> meta: ``next_seq, acked_upto, appended, removed, removed_bytes,
  quarantined, lost``, written with every ack and quarantine (same batch), on
  close and by interval syncs.  ``lost`` (absent from 48-byte metas written by
  0.x stores, read as 0) counts records the counters promised and the data no
  longer holds: LevelDB could not read them.  It is never reset, so a store
  that lost data is quarantined, never deleted (:meth:`~.store.SpillStore.destroy`).

Why ``cum`` instead of writing the meta with every append: an append is then a
single ``put`` (a ``write_batch`` with a meta put measured 2.8x slower than a
plain ``put``), yet counters are still O(1) at open and crash-consistent, since
each record's key carries its own running total (in the key, not the value,
so the value is exactly :func:`~.record.encode`'s bytes, with no copy)::

    next_seq = max(meta.next_seq, last r seq + 1, last q seq + 1)
    appended = max(meta.appended, cum of the last r / q record)
    backlog records = next_seq - 1 - removed      (sequence numbers are dense)
    backlog bytes   = appended - removed_bytes

Opening costs two reverse seeks and one forward seek, never a scan.  The
highest key of every table listed in LevelDB's manifest counts too, so
records lost with a damaged *last* table are still expected, not forgotten.

Records the counters expect but the range does not hold are *missing*: a
damaged table or log that LevelDB skipped (plyvel ends an iterator silently
on such an error).  Sequence numbers are dense, so this is exact.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import plyvel

from ..exceptions import SpillError, StoreDamaged, StoreLocked
from . import forksafe

if TYPE_CHECKING:
    from .store import SpillStore

__all__ = [
    "StoreDamaged",
    "StoreLocked",
    "StoreState",
    "has_data_files",
    "open_db",
    "open_paths",
    "read_state",
]

REC = b"r"
QUAR = b"q"
META_KEY = b"m"
REC_END = b"s"  # first key after every b"r..." key
SEQ = struct.Struct(">Q")
KEY = struct.Struct(">cQQ")  # keyspace, seq, cum
META_V1 = struct.Struct(">QQQQQQ")
META = struct.Struct(">QQQQQQQ")

logger = logging.getLogger(__name__)

# Stores open in *this* process, by resolved path.  LevelDB refuses a second
# open of one directory in a process, and find_orphans must not probe them.
open_lock = threading.Lock()
open_stores: dict[Path, SpillStore] = {}


def open_paths() -> dict[Path, SpillStore]:
    """Stores currently open in this process, by resolved path (a copy)."""
    with open_lock:
        return dict(open_stores)


def rkey(seq: int) -> bytes:
    """The 9-byte prefix of record ``seq``'s key: a seek target and range bound."""
    return REC + SEQ.pack(seq)


def seq_of(key: bytes) -> int:
    return int(SEQ.unpack_from(key, 1)[0])


def cum_of(key: bytes) -> int:
    return int(KEY.unpack(key)[2]) if len(key) == KEY.size else 0


def find_key(db: plyvel.DB, seq: int, prefix: bytes = REC) -> bytes | None:
    """The full key of record ``seq`` (tests, tools, and quarantining one record)."""
    with db.iterator(prefix=prefix + SEQ.pack(seq), include_value=False) as it:
        return next(it, None)


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, plyvel.IOError) and "lock" in str(exc).lower()


_DATA_FILE = re.compile(r"^(MANIFEST-\d+|\d+\.(log|ldb|sst))$")


def has_data_files(path: Path) -> bool:
    """True if ``path`` holds LevelDB data (a manifest, log or table), ``CURRENT`` or not."""
    try:
        return any(_DATA_FILE.match(name) for name in os.listdir(path))
    except OSError:
        return False


def open_db(path: Path, *, create: bool, write_buffer_size: int | None = None) -> plyvel.DB:
    """Open the LevelDB at ``path``.

    Raises :class:`StoreLocked` (a live process has it), :class:`StoreDamaged`
    (LevelDB reports corruption, or ``CURRENT`` is missing while data files are
    there) or :class:`SpillError` (anything else: the disk, permissions).

    ``create`` never applies to a directory that already holds data: LevelDB
    would start a new database there and delete the old tables as obsolete.
    """
    existing = has_data_files(path)
    if create and not (path / "CURRENT").exists() and existing:
        create = False
    if existing:
        # Recovering a log writes a table and may schedule a compaction.
        forksafe.mark(f"opened spill store {path} with existing data")
    extra = {} if write_buffer_size is None else {"write_buffer_size": write_buffer_size}
    try:
        db = plyvel.DB(str(path), create_if_missing=create, **extra)
    except plyvel.Error as exc:
        if is_lock_error(exc):
            raise StoreLocked(f"spill store {path} is in use by a live process: {exc}") from exc
        if isinstance(exc, plyvel.CorruptionError):
            raise StoreDamaged(f"spill store {path} is damaged: {_text(exc)}") from exc
        if not (path / "CURRENT").exists() and has_data_files(path):
            raise StoreDamaged(
                f"spill store {path} is damaged: its CURRENT file is missing "
                "(celery durable spill check --repair rebuilds it)"
            ) from exc
        raise SpillError(f"cannot open spill store {path}: {_text(exc)}") from exc
    note_recovery_errors(path)
    return db


#: Written into a store whose log LevelDB found damaged when opening it.
DAMAGE_NOTE = "DAMAGED"


def note_recovery_errors(path: Path) -> None:
    """Keep what LevelDB dropped while opening, before the evidence is gone.

    Recovering a damaged log, LevelDB (``paranoid_checks`` off) skips what
    fails its checksum, logs "(ignoring error) ... dropping N bytes" to its
    info ``LOG``, and deletes the log once the rest is flushed to a table: the
    ``LOG`` file (rotated at each open) is the only trace.  The lines are kept
    in :data:`DAMAGE_NOTE`, which makes the store not intact for good.
    ``repair_db`` logs what it drops the same way ("Log #N: dropping ...",
    "Table #N: ignoring ..."): call this after a repair too.
    """
    try:
        with open(path / "LOG", "rb") as fh:
            text = fh.read(1 << 20).decode(errors="replace")
    except OSError:
        return
    dropped = [line.split(" ", 2)[-1] for line in text.splitlines() if _DROPPED.search(line)]
    if not dropped:
        return
    summary = _summarize(dropped)
    logger.error(
        "celery-durable: spill store %s: LevelDB dropped unreadable data while opening it: %s",
        path,
        summary,
    )
    from .. import metrics

    metrics.DAMAGED_OPENS.inc()
    try:
        fd = os.open(path / DAMAGE_NOTE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(summary + "\n")
            fh.writelines(line + "\n" for line in dropped)
    except OSError as exc:
        logger.error("spill store %s: cannot write %s: %s", path, DAMAGE_NOTE, exc)


_DROPPED = re.compile(r"\(ignoring error\)|: dropping \d+ bytes;|(Log|Table) #\d+: ignoring ")
_DROPPING = re.compile(r"(\S+): dropping (\d+) bytes; (.*)$")


def _summarize(dropped: list[str]) -> str:
    total, files, reasons = 0, set(), set()
    for line in dropped:
        m = _DROPPING.search(line)
        if m is not None:
            files.add(Path(m[1]).name)
            total += int(m[2])
            reasons.add(m[3])
        else:
            reasons.add(line)
    return (
        f"dropped {total} bytes of {', '.join(sorted(files)) or 'its log'} "
        f"({len(dropped)} errors: {'; '.join(sorted(reasons))})"
    )


def damage_note(path: Path) -> str | None:
    """What LevelDB dropped when opening this store (None if it never did)."""
    try:
        text = (path / DAMAGE_NOTE).read_text(errors="replace").strip()
    except OSError:
        return None
    return "LevelDB " + text.splitlines()[0] if text else "LevelDB dropped unreadable data"


def lost_tables(path: Path) -> list[str]:
    """Tables LevelDB's repair moved to ``lost/`` because it could not read them all.

    (Repair also archives every log and manifest it converted there; those are
    copies of what it kept, so only tables count as unreadable data.)
    """
    try:
        return sorted(n for n in os.listdir(path / "lost") if n.endswith((".ldb", ".sst")))
    except OSError:
        return []


#: Read errors that say nothing about the data (retry later, never quarantine).
_TRANSIENT = ("Too many open files", "Cannot allocate memory", "Interrupted system call")


def read_error(path: Path, exc: BaseException) -> SpillError:
    """The error for a LevelDB read failure: :class:`StoreDamaged` unless it is transient.

    A table LevelDB cannot read (truncated: "Invalid argument", a bad block:
    Corruption) is damage; running out of file handles or memory is not.
    """
    text = _text(exc)
    if isinstance(exc, plyvel.Error) and not any(t in text for t in _TRANSIENT):
        return StoreDamaged(
            f"spill store {path} is damaged: read failed: {text} "
            "(celery durable spill check --repair salvages what LevelDB can read)"
        )
    return SpillError(f"spill store {path}: read failed: {text}")


def _text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


@dataclass
class StoreState:
    """The counters of a store, as :func:`read_state` derives them."""

    next_seq: int = 1
    acked: int = 0
    appended: int = 0
    removed: int = 0
    removed_bytes: int = 0
    quarantined: int = 0
    lost: int = 0
    #: Records the counters expect that the data does not hold (not stored:
    #: :func:`read_state` finds them, the store records them in ``lost``).
    missing: int = 0
    missing_bytes: int = 0
    #: False when the meta key was absent or damaged: acks are then unknown and
    #: ``missing`` is an upper bound (it may include records that were acked).
    counters_known: bool = True

    # Read without the store's lock by other threads: both terms only grow, so
    # read the subtracted one first.  A producer's append and a drainer's ack
    # landing between the two reads then make the result too high for a moment,
    # never too low (a backlog that reads 0 while a record waits is a lost drain).
    @property
    def records(self) -> int:
        removed = self.removed
        return self.next_seq - 1 - removed

    @property
    def nbytes(self) -> int:
        removed = self.removed_bytes
        return self.appended - removed

    def pack(self) -> bytes:
        return META.pack(
            self.next_seq,
            self.acked,
            self.appended,
            self.removed,
            self.removed_bytes,
            self.quarantined,
            self.lost,
        )

    def mark_empty(self) -> None:
        """Make the counters say "nothing waiting" (the range holds no record)."""
        self.removed = self.next_seq - 1
        self.removed_bytes = self.appended


def _last(db: plyvel.DB, prefix: bytes) -> tuple[int, int] | None:
    with db.iterator(prefix=prefix, reverse=True, include_value=False) as it:
        key = next(it, None)
    if key is None:
        return None
    return seq_of(key), cum_of(key)


def first_key(db: plyvel.DB, acked: int) -> bytes | None:
    """The first backlog key after the cursor (a seek, never a walk over tombstones)."""
    with db.iterator(start=rkey(acked + 1), stop=REC_END, include_value=False) as it:
        return next(it, None)


def read_state(db: plyvel.DB) -> StoreState:
    """Counters from the meta key and the last records (O(1), see module docstring)."""
    raw = db.get(META_KEY)
    if raw is not None and len(raw) == META.size:
        state = StoreState(*META.unpack(raw))
    elif raw is not None and len(raw) == META_V1.size:
        state = StoreState(*META_V1.unpack(raw))
    else:
        if raw is not None:
            logger.error("spill store meta is damaged (%d bytes); rebuilding it", len(raw))
        state = StoreState(counters_known=False)
    for last in (_last(db, REC), _last(db, QUAR), *manifest_last(db)):
        if last is not None:
            state.next_seq = max(state.next_seq, last[0] + 1)
            state.appended = max(state.appended, last[1])
    if state.records < 0 or state.nbytes < 0:
        state.mark_empty()  # counters a damaged meta got wrong the other way
    elif first_key(db, state.acked) is None and state.records > 0:
        # Counted but not stored: LevelDB skipped a table or log it could not read.
        state.missing, state.missing_bytes = state.records, state.nbytes
        state.mark_empty()
    return state


# One table of LevelDB's "leveldb.sstables" property:
#  ``" 5:47680['r\x00...' @ 1 : 1 .. 'r\x00...' @ 1000 : 1]"`` (EscapeString'd keys).
_TABLE = re.compile(rb"^ *(\d+):(\d+)\['(.*)' @ \d+ : \d+ \.\. '(.*)' @ \d+ : \d+\]$")
_ESCAPE = re.compile(rb"\\x([0-9a-f]{2})")


def manifest_tables(db: plyvel.DB) -> list[tuple[int, int, bytes, bytes]]:
    """``(number, size, smallest key, largest key)`` of every table in the manifest.

    From the manifest, not the tables, so it holds when a table is unreadable.
    """
    raw = db.get_property(b"leveldb.sstables") or b""
    tables = []
    for line in raw.split(b"\n"):
        m = _TABLE.match(line)
        if m is not None:
            lo, hi = (_ESCAPE.sub(lambda x: bytes([int(x[1], 16)]), k) for k in m.group(3, 4))
            tables.append((int(m[1]), int(m[2]), lo, hi))
    return tables


def manifest_last(db: plyvel.DB) -> list[tuple[int, int]]:
    """``(seq, cum)`` of the highest record or quarantine key of each table."""
    return [
        (seq_of(hi), cum_of(hi))
        for _n, _size, _lo, hi in manifest_tables(db)
        if len(hi) == KEY.size and hi[:1] in (REC, QUAR)
    ]


def first_created(db: plyvel.DB, acked: int) -> float | None:
    """``created`` of the oldest readable record after ``acked`` (None if there is none).

    Seeks straight past the acknowledged range, never from the start of the
    keyspace (tombstones).  Undecodable records are skipped: ``peek`` quarantines them.
    """
    from ..exceptions import CorruptRecord, VersionMismatch
    from .record import decode

    with db.iterator(start=rkey(acked + 1), stop=REC_END) as it:
        for _key, value in it:
            try:
                return decode(value).created
            except (CorruptRecord, VersionMismatch):
                continue
    return None
