"""The dump write-ahead log: a final failure is on local disk before its handler returns.

Every process that captures failures appends each :class:`EncodedDump` to its own
log before the ``task_failure`` handler returns; the dump queue then moves whole
segments of it into the dump store and deletes a segment only once the store has
it.  A process that dies (SIGKILL, OOM) leaves its log behind, and the next
process to start (a worker's main process or a pool child) adopts and flushes it.

Layout, under ``$CELERY_DURABLE_DIR/dlq-wal/<key>/`` (directories 0700, files
0600; ``key`` is a hash of the dump store URL, so a log is only ever flushed
into the store it was written for)::

    store                   the store URL, password masked (for humans)
    <owner>.lock            held by the writing process while it lives
    <owner>.<n>.wal         segments: the newest is appended to, older ones wait
    quarantine/<name>[.why] segments that could not be read completely

``owner`` is ``<host>-<pid>-<random>``.  Liveness is the lock, never the pid
(pids are reused, containers share host names): a POSIX record lock
(``lockf``) is released by the kernel when its process dies, and is *not*
inherited by ``fork``, so a prefork child never holds its parent's lock.  A lock
file is created under a temporary name, locked, then renamed into place, so no
prober can ever find an owner's lock file unlocked while the owner lives.

Why not the spill store (LevelDB)?  LevelDB starts one background thread per
process on its first compaction and does not survive ``fork``: a child forked
after its parent compacted has the thread's flag set but no thread, and hangs
on its first memtable switch (measured: a child blocks forever after ~4 MB of
writes).  A Celery worker's main process forks pool children all its life, and
captures failures itself (hard time limits, lost workers), so its log must be
fork-safe.  An append to an ``O_APPEND`` file is one ``write(2)``, cheaper than a
LevelDB put, and survives a process crash the same way (the page cache is the
kernel's; ``fsync`` happens when the store writes the batch).

Segment format (CRC-framed like the ``file://`` dump store's segments)::

    b"CDLQWAL\\0" | u32 version
    then per record: b"\\xd1\\x0c\\x5e\\x9b" | u32 length | u32 crc32(body) | body
    body: f64 failed_at | u16 len | task_id | u16 len | task_name | payload

A record that fails its CRC or is cut short is skipped and counted in
``celery_durable_corrupt_records{store="dlq-wal"}``; the reader resynchronises on
the next marker.  A segment with damage or another version is moved to
``quarantine/`` after its good records were written, never deleted.

Duplicates: a process that dies after the store wrote a segment's batch but
before it unlinked the segment leaves it to be written again by its adopter.
The ``redis://`` store files a dump under an id derived from its bytes, so the
second write changes nothing; the ``file://`` store then holds the batch twice
(same task ids).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from .. import metrics
from ..options import default_dir
from ..sentinel_url import display_url
from .base import EncodedDump

__all__ = ["DumpWAL", "Segment", "discard", "find_orphans", "read_segment", "wal_dir"]

logger = logging.getLogger(__name__)

VERSION = 1
MAGIC = b"CDLQWAL\0"
HEAD = struct.Struct(">8sI")
REC_MAGIC = b"\xd1\x0c\x5e\x9b"
REC = struct.Struct(">4sII")  # marker, body length, crc32(body)
BODY = struct.Struct(">dH")  # failed_at, len(task_id); then u16 len(task_name)
U16 = struct.Struct(">H")
SUFFIX = ".wal"
LOCK = ".lock"

# Lock files this process holds (its own and the orphans it adopted).  A POSIX
# lock never conflicts with its own process, and closing *any* descriptor of a
# file drops the process's lock on it, so these must never be probed.
_held: set[str] = set()
_held_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _held_lock
    _held.clear()  # locks are not inherited by a child
    _held_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def wal_dir(store_url: str, root: Path | None = None) -> Path:
    """Where the logs of dumps bound for ``store_url`` live."""
    key = hashlib.sha1(store_url.encode()).hexdigest()[:16]
    return (root or default_dir() / "dlq-wal") / key


def _mkdir(path: Path) -> None:
    """Create ``path`` and any missing parent owner-only (``mkdir -p`` gives parents 0755)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


def encode_record(dump: EncodedDump) -> bytes:
    task_id = dump.task_id.encode()
    task_name = dump.task_name.encode()
    body = b"".join(
        (
            BODY.pack(dump.failed_at, len(task_id)),
            task_id,
            U16.pack(len(task_name)),
            task_name,
            dump.payload,
        )
    )
    return REC.pack(REC_MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> EncodedDump:
    failed_at, idlen = BODY.unpack_from(body, 0)
    pos = BODY.size + idlen
    task_id = body[BODY.size : pos].decode()
    (namelen,) = U16.unpack_from(body, pos)
    pos += U16.size
    task_name = body[pos : pos + namelen].decode()
    return EncodedDump(task_id, task_name, failed_at, body[pos + namelen :])


@dataclass
class Segment:
    """What :func:`read_segment` found in one segment file."""

    path: Path
    dumps: list[EncodedDump]
    #: Why the segment cannot be deleted once its dumps are stored (None: it can).
    damage: str | None = None


def read_segment(path: Path) -> Segment:
    """The readable dumps of ``path``; damage is counted, logged and described."""
    data = path.read_bytes()
    if len(data) < HEAD.size:
        return Segment(path, [], None if not data else "segment header cut short")
    magic, version = HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        return Segment(path, [], "not a dump log segment (bad magic)")
    if version != VERSION:
        return Segment(path, [], f"format version {version}, this code reads {VERSION}")
    dumps: list[EncodedDump] = []
    damaged: list[str] = []
    pos = HEAD.size
    while pos < len(data):
        if len(data) - pos >= REC.size:
            marker, length, crc = REC.unpack_from(data, pos)
            start, end = pos + REC.size, pos + REC.size + length
            if marker == REC_MAGIC and end <= len(data) and zlib.crc32(data[start:end]) == crc:
                try:
                    dumps.append(_decode_body(data[start:end]))
                    pos = end
                    continue
                except (struct.error, UnicodeDecodeError):
                    pass
        damaged.append(f"offset {pos}")
        nxt = data.find(REC_MAGIC, pos + 1)  # resynchronise on the next record
        if nxt < 0:
            break
        pos = nxt
    if damaged:
        metrics.CORRUPT_RECORDS.labels(store="dlq-wal").inc(len(damaged))
        logger.error("dlq: damaged records in dump log %s at %s", path, ", ".join(damaged))
        return Segment(path, dumps, "damaged records at " + ", ".join(damaged))
    return Segment(path, dumps)


def _try_lock(path: Path) -> int | None:
    """A descriptor holding ``path``'s lock, or None if a live process holds it."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class _Owner:
    """A held lock and the segments of its owner (ours, or an adopted orphan's)."""

    def __init__(self, directory: Path, name: str, fd: int) -> None:
        self.directory = directory
        self.name = name
        self.fd = fd
        self.lock_path = directory / f"{name}{LOCK}"

    def segments(self) -> list[Path]:
        prefix = self.name + "."
        found = [
            self.directory / n
            for n in os.listdir(self.directory)
            if n.startswith(prefix) and n.endswith(SUFFIX)
        ]
        return sorted(found)

    def release(self) -> None:
        """Delete the lock file, then let go of it (an owner whose segments are gone)."""
        with contextlib.suppress(FileNotFoundError):
            self.lock_path.unlink()
        self.close()

    def close(self) -> None:
        """Let go of the lock, keeping the files: the next process adopts them."""
        with _held_lock:
            _held.discard(str(self.lock_path))
        os.close(self.fd)


def find_orphans(directory: Path) -> list[_Owner]:
    """Take the lock of every owner in ``directory`` whose process is dead."""
    directory = directory.resolve()  # _held is keyed by resolved paths
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    owners = {n[: -len(LOCK)] for n in names if n.endswith(LOCK)}
    # Segments without a lock file (it was deleted by hand): adopt them too.
    stray = {n.split(".", 1)[0] for n in names if n.endswith(SUFFIX)} - owners
    found: list[_Owner] = []
    for name in sorted(owners | stray):
        path = directory / f"{name}{LOCK}"
        with _held_lock:
            if str(path) in _held:
                continue
        if name in stray:
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                logger.error("dlq: cannot adopt dump log segments of %s: %s", name, exc)
                continue
        fd = _try_lock(path)
        if fd is None:
            continue
        with _held_lock:
            _held.add(str(path))
        found.append(_Owner(directory, name, fd))
    return found


class _Written:
    """What this process appended to one of its segments."""

    __slots__ = ("dumps", "nbytes", "records")

    def __init__(self) -> None:
        self.records = 0
        self.nbytes = 0
        #: The dumps as appended, or None once past the log's ``keep_bytes``.
        self.dumps: list[EncodedDump] | None = []


class DumpWAL:
    """This process's dump log: append records, seal segments, hand them to the flusher.

    Not thread-safe on its own: the dump queue calls :meth:`append` and
    :meth:`seal` under its lock.

    Up to ``keep_bytes`` of the dumps in its own segments are also kept in
    memory (:meth:`kept`), so the flusher need not read back and check what
    this process has just written; a segment past that bound, and every
    adopted one, is read from disk (:func:`read_segment`).
    """

    def __init__(
        self,
        directory: Path,
        *,
        store_url: str = "",
        max_bytes: int = 1 << 30,
        keep_bytes: int = 0,
    ) -> None:
        _mkdir(directory)
        directory = directory.resolve()
        self.directory = directory
        self.max_bytes = max_bytes
        info = directory / "store"
        if store_url and not info.exists():
            with contextlib.suppress(OSError):
                fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(display_url(store_url) + "\n")
        host = socket.gethostname().replace(".", "_").replace(os.sep, "_") or "localhost"
        name = f"{host}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(tmp, directory / f"{name}{LOCK}")
        self.owner = _Owner(directory, name, fd)
        with _held_lock:
            _held.add(str(self.owner.lock_path))
        self.keep_bytes = keep_bytes
        self._seq = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._open: _Written | None = None
        self._written: dict[Path, _Written] = {}  # our segments on disk
        self._kept = 0  # bytes of the segments whose dumps are kept
        self.records = 0  # records in our segments (not yet in the store)
        self.nbytes = 0  # and their bytes

    def append(self, dump: EncodedDump) -> int:
        """Write one record to the open segment; return its size.  Raises ``OSError``."""
        record = encode_record(dump)
        size = len(record)
        if self.nbytes + size > self.max_bytes:
            raise OSError(
                f"dump log {self.directory} holds {self.nbytes} bytes; "
                f"{size} more would exceed {self.max_bytes}"
            )
        fd, written = self._fd, self._open
        if fd is None or written is None:
            fd, written = self._new_segment()
        count = os.write(fd, record)
        if count != size:  # disk full: the torn tail is skipped on read
            path = self.seal()
            raise OSError(f"dump log {path}: short write ({count} of {size})")
        written.records += 1
        kept = written.dumps
        if kept is not None:
            if self._kept + size <= self.keep_bytes:
                kept.append(dump)
                self._kept += size
            else:  # past the bound: this segment will be read back from disk
                written.dumps = None
                self._kept -= written.nbytes
        written.nbytes += size
        self.records += 1
        self.nbytes += size
        return size

    def _new_segment(self) -> tuple[int, _Written]:
        self._seq += 1
        path = self.directory / f"{self.owner.name}.{self._seq:010d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            os.write(fd, HEAD.pack(MAGIC, VERSION))
        except OSError:
            os.close(fd)
            raise
        self._fd, self._path = fd, path
        self._open = self._written[path] = _Written()
        return fd, self._open

    def seal(self) -> Path | None:
        """Close the open segment (later appends start a new one); return its path."""
        path, fd = self._path, self._fd
        self._fd = self._path = self._open = None
        if fd is not None:
            os.close(fd)
        return path

    def segments(self) -> list[Path]:
        """Our segments on disk, oldest first (the open one included)."""
        return self.owner.segments()

    def kept(self, path: Path) -> Segment | None:
        """A sealed segment of ours as appended, if its dumps were kept in memory."""
        written = self._written.get(path)
        if written is None or written.dumps is None or path == self._path:
            return None
        return Segment(path, written.dumps)

    def discard(self, segment: Segment) -> None:
        """The store has ``segment``'s dumps: delete it (quarantine it if damaged)."""
        discard(segment)
        written = self._written.pop(segment.path, None)
        if written is not None:
            self.records -= written.records
            self.nbytes -= written.nbytes
            if written.dumps is not None:
                self._kept -= written.nbytes

    def close(self) -> None:
        """Close the log; segments left on disk are adopted by the next process."""
        self.seal()
        if self.segments():
            self.owner.close()
        else:
            self.owner.release()


def discard(segment: Segment) -> None:
    """Delete a segment whose dumps are in the store; quarantine it if it had damage."""
    if segment.damage is None:
        segment.path.unlink(missing_ok=True)
    else:
        quarantine(segment)


def quarantine(segment: Segment) -> None:
    """Move a segment that could not be read completely aside, with a note saying why."""
    qdir = segment.path.parent / "quarantine"
    _mkdir(qdir)
    why = qdir / f"{segment.path.name}.why"
    try:
        fd = os.open(why, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{segment.damage}\n")
        os.rename(segment.path, qdir / segment.path.name)
    except OSError as exc:
        logger.error("dlq: cannot quarantine dump log %s: %s", segment.path, exc)
        return
    logger.error(
        "dlq: dump log %s quarantined (%s); its %d readable dumps were stored",
        segment.path,
        segment.damage,
        len(segment.dumps),
    )
