"""``file:///path``: dumps in append-only segment files, one file per flush.

Layout under the store directory (created 0700, every file 0600)::

    segments/<time_ns>-<host>-<pid>-<counter>.seg   complete segments, never modified
    tmp/<name>.tmp                                  a segment being written
    deleted/<segment stem>.<unique>.del             tombstones: record indexes deleted
    quarantine/<name>[.why]                         unreadable segments, kept for a human

Writing (many processes at once, no locks): a flush builds the whole segment in
``tmp/`` under a name no other process can pick (host, pid, time, counter),
fsyncs it and renames it into ``segments/``, then fsyncs the directory.  A reader
sees a segment completely or not at all; a writer SIGKILLed mid-flush leaves
only a temp file, which is never read.

Segment format::

    b"CDLQSEG\\0" | u32 version | u16 meta_len | meta (JSON: host, pid, count) | u32 crc32
    then per record: b"\\xd1\\x0c\\x5e\\x9a" | u32 length | u32 crc32(payload) | payload

The version comes first so any later format can still be recognised.  A segment
of another ``durable_dlq_version`` is left where it is, never read and never
deleted, and reported by :meth:`FileStore.quarantined` (a newer deployment may
be reading it).  A segment whose header is damaged is moved to ``quarantine/``.
Within a good segment a record that fails its CRC (flipped byte) or runs past
the end (torn tail) is skipped, counted once per process in
``celery_durable_corrupt_records{store="dlq"}`` and reported; the reader
resynchronises on the next record marker and reads the rest.

Deleting (safe with concurrent writers, readers and deleters): segments are
immutable, so a delete writes a *tombstone* file (atomically, temp + rename)
listing the deleted record indexes of one segment.  Readers list the tombstones
*before* reading segments, so a reader sees a consistent snapshot: at worst an
entry deleted during the read still shows, never a half state.  When the
tombstones of a segment cover all its records the segment is unlinked, then its
tombstones (a segment that had damaged records is moved to ``quarantine/``
instead).  Two deleters racing write two tombstones; their union is the truth,
so no delete is lost, which a rewrite-and-rename scheme could not guarantee.

Entry ids are ``<segment stem>:<index>``: segment names start with the write
time, so sorting ids lists dumps oldest first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import json
import logging
import math
import os
import re
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from kombu.exceptions import ContentDisallowed

from ... import files, metrics
from ...exceptions import ConfigError, CorruptRecord, DumpError
from ..base import DumpEntry, DumpStore, EncodedDump, QuarantinedDump
from ..codec import Codec, crc32
from ..retention import Retention
from ..summary import DumpSummary, summarize

__all__ = ["FileStore"]

logger = logging.getLogger(__name__)

MAGIC = b"CDLQSEG\0"
HEAD = struct.Struct(">8sIH")  # magic, version, meta length
CRC = struct.Struct(">I")
REC_MAGIC = b"\xd1\x0c\x5e\x9a"
REC = struct.Struct(">4sII")  # marker, payload length, crc32(payload)
SUFFIX = ".seg"

_counter = itertools.count()
#: A whole tombstone: record indexes, one per line, each line ended.
_TOMBSTONE = re.compile(r"(?:[0-9]+\n)+")
_SAFE = re.compile(r"[^A-Za-z0-9_]+")  # no dots: the stem ends at the first dot
_SAFE_STEM = re.compile(r"[A-Za-z0-9_-]+")  # what a segment stem can be (no "/", no "..")


def _path_from_url(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"durable_dlq_url {url!r}: file URLs must be local (file:///path)")
    if not parts.path:
        raise ConfigError(f"durable_dlq_url {url!r}: no path")
    return Path(unquote(parts.path))


def encode_header(version: int, meta: dict[str, object]) -> bytes:
    raw = json.dumps(meta, separators=(",", ":")).encode()
    head = HEAD.pack(MAGIC, version, len(raw)) + raw
    return head + CRC.pack(crc32(head[8:]))


def encode_record(payload: bytes) -> bytes:
    return REC.pack(REC_MAGIC, len(payload), crc32(payload)) + payload


class _Segment:
    """One parsed segment: header fields, good records, damaged offsets."""

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.stem = path.name[: -len(SUFFIX)]
        magic, self.version, meta_len = HEAD.unpack_from(data, 0)  # struct.error if short
        if magic != MAGIC:
            raise CorruptRecord("not a dump segment (bad magic)")
        end = HEAD.size + meta_len
        if len(data) < end + CRC.size:
            raise CorruptRecord("segment header cut short")
        (crc,) = CRC.unpack_from(data, end)
        if crc != crc32(data[8:end]):
            raise CorruptRecord("segment header checksum mismatch")
        self.meta = json.loads(data[HEAD.size : end])
        self.count = int(self.meta.get("count", 0))
        self.body_at = end + CRC.size
        self.data = data

    def records(self) -> tuple[list[tuple[int, bytes]], list[tuple[int, str]]]:
        """Good ``(index, payload)`` records and damaged ``(offset, reason)`` spots."""
        good: list[tuple[int, bytes]] = []
        damaged: list[tuple[int, str]] = []
        data, pos, index = self.data, self.body_at, 0
        view = memoryview(data)  # the checksum reads the record in place
        while pos < len(data):
            if len(data) - pos < REC.size:
                damaged.append((pos, "torn tail (record header cut short)"))
                break
            marker, length, crc = REC.unpack_from(data, pos)
            start, end = pos + REC.size, pos + REC.size + length
            if marker == REC_MAGIC and end <= len(data) and crc32(view[start:end]) == crc:
                good.append((index, data[start:end]))
                index += 1
                pos = end
                continue
            reason = (
                "torn tail (record cut short)"
                if marker == REC_MAGIC and end > len(data)
                else "record checksum mismatch"
            )
            damaged.append((pos, reason))
            index += 1
            # Resynchronise on the next record marker; records after it are fine.
            nxt = data.find(REC_MAGIC, pos + 1)
            if nxt < 0:
                break
            pos = nxt
        return good, damaged


class FileStore(DumpStore):
    """Dump segments in a local directory, shared by every process of this host."""

    def __init__(self, url: str, *, codec: Codec | None = None, version: int = 1) -> None:
        self.url = url
        self.root = _path_from_url(url)
        self.codec = codec or Codec()
        self.version = version
        self.host = socket.gethostname()
        self.segments_dir = self.root / "segments"
        self.tmp_dir = self.root / "tmp"
        self.deleted_dir = self.root / "deleted"
        self.quarantine_dir = self.root / "quarantine"
        self._counted: set[tuple[str, int]] = set()
        self._bad_tombstones: set[str] = set()
        # stem -> whether the segment has damaged records, from reading it (segments
        # never change), so a delete that empties it need not read it again.
        self._damaged: dict[str, bool] = {}
        # Tombstones written inside batched_deletes(), fsynced when it ends.
        self._unsynced: list[Path] | None = None
        try:
            for d in (self.root, self.segments_dir, self.tmp_dir, self.deleted_dir):
                # Parents too: dumps hold task arguments (mkdir's parents=True made them 0755).
                files.private_dir(d, setting="durable_dlq_url", error=DumpError)
        except OSError as exc:
            raise DumpError(f"cannot create dump store {self.root}: {exc}") from exc

    # -- writing ---------------------------------------------------------------
    def write_encoded(self, dumps: Sequence[EncodedDump]) -> list[str]:
        if not dumps:
            return []
        pid = os.getpid()
        stem = f"{time.time_ns():020d}-{_SAFE.sub('_', self.host)}-{pid}-{next(_counter):08d}"
        meta = {"host": self.host, "pid": pid, "count": len(dumps), "created": time.time()}
        chunks = [encode_header(self.version, meta)]
        chunks.extend(encode_record(dump.payload) for dump in dumps)
        tmp = self.tmp_dir / f"{stem}.tmp"
        final = self.segments_dir / f"{stem}{SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(b"".join(chunks))
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            self._fsync_dir(self.segments_dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise DumpError(f"cannot write dump segment {final}: {exc}") from exc
        return [f"{stem}:{index:06d}" for index in range(len(dumps))]

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------
    def _tombstones(self, stems: Iterable[str] | None = None) -> dict[str, set[int]]:
        """Deleted record indexes per segment stem (only ``stems``' when given)."""
        only = None if stems is None else set(stems)
        deleted: dict[str, set[int]] = defaultdict(set)
        for name in self._listdir(self.deleted_dir):
            if not name.endswith(".del"):
                continue
            stem = name.split(".", 1)[0]
            if only is not None and stem not in only:
                continue
            try:
                text = (self.deleted_dir / name).read_text()
            except FileNotFoundError:  # its segment was just compacted away
                continue
            if _TOMBSTONE.fullmatch(text) is None:
                # Only a tombstone written without fsync (batched_deletes) and
                # cut short by a power loss: its deletes are lost, so its dumps
                # are restored again (at least once), never the other way round.
                if name not in self._bad_tombstones:
                    self._bad_tombstones.add(name)
                    logger.warning("dlq: ignoring incomplete tombstone %s", name)
                continue
            deleted[stem].update(int(x) for x in text.split())
        return deleted

    @staticmethod
    def _listdir(path: Path) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except FileNotFoundError:
            return []

    def _segments(self) -> Iterator[_Segment | QuarantinedDump]:
        """Readable segments of our version, oldest first; others as QuarantinedDump."""
        for name in self._listdir(self.segments_dir):
            if not name.endswith(SUFFIX):
                continue
            path = self.segments_dir / name
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # compacted away by a concurrent delete
                continue
            except OSError as exc:
                raise DumpError(f"cannot read dump segment {path}: {exc}") from exc
            try:
                seg = _Segment(path, data)
            except (CorruptRecord, struct.error, ValueError) as exc:
                yield self._quarantine(path, f"unreadable segment header: {exc}")
                continue
            if seg.version != self.version:
                yield QuarantinedDump(
                    str(path),
                    f"format version {seg.version}, this store reads {self.version}",
                    seg.version,
                )
                continue
            yield seg

    def _quarantine(self, path: Path, reason: str) -> QuarantinedDump:
        """Move an unreadable segment out of the way, with a note saying why."""
        self._count_damage(path.name, -1)
        logger.error("dlq: quarantining dump segment %s: %s", path, reason)
        self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
        target = self.quarantine_dir / path.name
        try:
            why = self.quarantine_dir / f"{path.name}.why"
            fd = os.open(why, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(reason + "\n")
            os.rename(path, target)
        except FileNotFoundError:  # another reader moved it first
            pass
        except OSError as exc:
            logger.error("dlq: cannot move %s to quarantine: %s", path, exc)
            return QuarantinedDump(str(path), reason)
        return QuarantinedDump(str(target), reason)

    def _count_damage(self, name: str, offset: int) -> None:
        if (name, offset) not in self._counted:
            self._counted.add((name, offset))
            metrics.CORRUPT_RECORDS.labels(store="dlq").inc()

    def _decoded(
        self, seg: _Segment, deleted: set[int]
    ) -> tuple[list[DumpEntry], list[QuarantinedDump]]:
        bad: list[QuarantinedDump] = []
        return list(self._decode(seg, deleted, bad)), bad

    def _decode(
        self, seg: _Segment, deleted: set[int], bad: list[QuarantinedDump]
    ) -> Iterator[DumpEntry]:
        """The live entries of ``seg`` one by one (what cannot be read goes to ``bad``).

        One at a time, not a segment's list: a restore keeps none of them, and
        thousands alive at once would be promoted into the garbage collector's
        oldest generation and set off its full collections.
        """
        good, damaged = seg.records()
        if len(self._damaged) >= 10_000:
            self._damaged.clear()
        self._damaged[seg.stem] = bool(damaged)
        for offset, reason in damaged:
            self._count_damage(seg.path.name, offset)
            bad.append(QuarantinedDump(f"{seg.path}@{offset}", reason, seg.version))
        decode = self.codec.decode
        for index, payload in good:
            if index in deleted:
                continue
            try:
                entry = decode(payload)
            except ContentDisallowed as exc:
                bad.append(QuarantinedDump(f"{seg.path}#{index}", f"not accepted: {exc}"))
                continue
            except CorruptRecord as exc:
                self._count_damage(seg.path.name, -2 - index)
                bad.append(QuarantinedDump(f"{seg.path}#{index}", str(exc), seg.version))
                continue
            entry.entry_id = f"{seg.stem}:{index:06d}"
            if not entry.host:
                entry.host = str(seg.meta.get("host", ""))
            yield entry

    def entries(self, *, task: str | None = None) -> Iterator[DumpEntry]:
        deleted = self._tombstones()
        for seg in self._segments():
            if isinstance(seg, QuarantinedDump):
                continue
            for entry in self._decode(seg, deleted.get(seg.stem, set()), []):
                if task is None or entry.task_name == task:
                    yield entry

    def quarantined(self) -> list[QuarantinedDump]:
        found: list[QuarantinedDump] = []
        deleted = self._tombstones()
        for seg in self._segments():
            if isinstance(seg, QuarantinedDump):
                found.append(seg)
            else:
                found.extend(self._decoded(seg, deleted.get(seg.stem, set()))[1])
        for name in self._listdir(self.quarantine_dir):
            if name.endswith(".why"):
                continue
            why = self.quarantine_dir / f"{name}.why"
            try:
                reason = why.read_text().strip()
            except OSError:
                reason = "quarantined"
            found.append(QuarantinedDump(str(self.quarantine_dir / name), reason))
        return found

    # -- listing (dlq/summary.py: the console) -----------------------------------
    # Segments never change once renamed into segments/, so a segment's summaries
    # are made once per process and kept; a call lists the directories, reads the
    # tombstones and only the segments it has not seen.  When no directory changed
    # since the last call (mtimes older than the call, so no change can hide in
    # the timestamp granularity) not even that.
    def summaries(self) -> tuple[list[DumpSummary], list[QuarantinedDump]]:
        """Live dumps oldest first as summaries, and what could not be read."""
        key = tuple(self._mtime(d) for d in (self.segments_dir, self.deleted_dir))
        key += (self._mtime(self.quarantine_dir),)
        last = self.__dict__.get("_summary_last")
        if last is not None and last[0] == key and max(key) < last[1] - 1.0:
            return last[2]
        started = time.time()
        cache: dict[str, tuple[list[tuple[int, DumpSummary]], list[QuarantinedDump]]]
        cache = self.__dict__.setdefault("_summary_cache", {})
        deleted = self._tombstones()
        names = [n for n in self._listdir(self.segments_dir) if n.endswith(SUFFIX)]
        live: list[DumpSummary] = []
        bad: list[QuarantinedDump] = []
        done = 0
        if (
            last is not None
            and last[0][2] == key[2]
            and last[4] == deleted
            and len(names) > len(last[3])
            and names[: len(last[3])] == last[3]
        ):
            # Only new segments (they sort last: names start with the write time),
            # no new tombstone, nothing quarantined: read just the new segments.
            done = len(last[3])
            live, bad = list(last[2][0]), list(last[2][1])
        for name in names[done:]:
            stem = name[: -len(SUFFIX)]
            found = cache.get(stem)
            if found is None:
                found = self._summarize(self.segments_dir / name)
                if found is None:
                    continue
                cache[stem] = found
            rows, damaged = found
            gone = deleted.get(stem)
            live.extend(s for i, s in rows if not gone or i not in gone)
            bad.extend(damaged)
        if not done:
            if len(cache) > len(names):
                present = {n[: -len(SUFFIX)] for n in names}
                for stem in [s for s in cache if s not in present]:
                    del cache[stem]
            for name in self._listdir(self.quarantine_dir):
                if not name.endswith(".why"):
                    bad.append(QuarantinedDump(str(self.quarantine_dir / name), "quarantined"))
        result = (live, bad)
        self.__dict__["_summary_last"] = (key, started, result, names, deleted)
        return result

    @staticmethod
    def _mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _summarize(
        self, path: Path
    ) -> tuple[list[tuple[int, DumpSummary]], list[QuarantinedDump]] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DumpError(f"cannot read dump segment {path}: {exc}") from exc
        try:
            seg = _Segment(path, data)
        except (CorruptRecord, struct.error, ValueError) as exc:
            self._quarantine(path, f"unreadable segment header: {exc}")
            return None
        if seg.version != self.version:
            why = f"format version {seg.version}, this store reads {self.version}"
            return [], [QuarantinedDump(str(path), why, seg.version)]
        entries, bad = self._decoded(seg, set())
        rows = [(int(e.entry_id.rpartition(":")[2]), summarize(e)) for e in entries]
        return rows, bad

    def fetch(self, entry_ids: Iterable[str]) -> list[DumpEntry]:
        """The live dumps with these ids, oldest first; reads only their segments."""
        wanted: dict[str, set[int]] = defaultdict(set)
        for entry_id in entry_ids:
            stem, _, index = entry_id.rpartition(":")
            if stem and index.isdigit() and _SAFE_STEM.fullmatch(stem):
                wanted[stem].add(int(index))
        if not wanted:
            return []
        deleted = self._tombstones()
        found: list[DumpEntry] = []
        for stem in sorted(wanted):
            path = self.segments_dir / f"{stem}{SUFFIX}"
            try:
                seg = _Segment(path, path.read_bytes())
            except FileNotFoundError:
                continue
            except (CorruptRecord, struct.error, ValueError, OSError):
                continue
            if seg.version != self.version:
                continue
            entries, _ = self._decoded(seg, deleted.get(stem, set()))
            found.extend(e for e in entries if int(e.entry_id.rpartition(":")[2]) in wanted[stem])
        return found

    # -- notes: small JSON documents about the store (the last restore run) ----
    def put_note(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.tmp_dir / f"note.{os.getpid()}.{next(_counter)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
            os.rename(tmp, self.root / f"{_SAFE.sub('_', name)}.note.json")
        except OSError as exc:
            raise DumpError(f"cannot write note {name} in {self.root}: {exc}") from exc

    def get_note(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / f"{_SAFE.sub('_', name)}.note.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- deleting --------------------------------------------------------------
    def delete(self, entry_ids: Iterable[str]) -> int:
        wanted: dict[str, set[int]] = defaultdict(set)
        for entry_id in entry_ids:
            stem, _, index = entry_id.rpartition(":")
            if stem and index.isdigit():
                wanted[stem].add(int(index))
        if not wanted:
            return 0
        deleted = self._tombstones(wanted)
        removed = 0
        for stem, indexes in wanted.items():
            path = self.segments_dir / f"{stem}{SUFFIX}"
            seg = self._head(path)
            if seg is None or seg.version != self.version:
                continue  # gone, or never delete from a segment we cannot read
            new = {i for i in indexes if i < seg.count} - deleted[stem]
            if not new:
                continue
            # A delete that empties the segment removes it (that is the delete: no
            # tombstone needed); if it cannot, the tombstone says the same.
            if not (deleted[stem] | new >= set(range(seg.count)) and self._compact(seg)):
                self._write_tombstone(stem, new)
            removed += len(new)
        return removed

    @staticmethod
    def _head(path: Path) -> _Segment | None:
        """The segment at ``path`` from its header alone; None if gone or unreadable."""
        try:
            with open(path, "rb") as fh:
                data = fh.read(4096)
                if len(data) >= HEAD.size:
                    need = HEAD.size + HEAD.unpack_from(data, 0)[2] + CRC.size
                    if need > len(data):
                        data += fh.read(need - len(data))
            return _Segment(path, data)
        except (CorruptRecord, struct.error, ValueError, OSError):
            return None

    @contextlib.contextmanager
    def batched_deletes(self) -> Iterator[None]:
        """Deletes inside write their tombstones without waiting for the disk; they are
        fsynced when the block ends.

        Visible at once all the same (readers in any process see them, a SIGKILL
        loses nothing).  Only a power loss before the end can undo some of them,
        and an undone delete restores its dumps again (at least once); a torn
        tombstone is ignored whole (see ``_TOMBSTONE``).  A restore run deletes
        after every chunk, where two fsyncs each cost more than the chunk's publish.
        """
        if self._unsynced is not None:  # nested: the outer block syncs
            yield
            return
        self._unsynced = []
        try:
            yield
        finally:
            pending, self._unsynced = self._unsynced, None
            self._sync(pending)

    def _sync(self, tombstones: list[Path]) -> None:
        try:
            for path in tombstones:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:  # its segment was compacted away since
                    continue
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if tombstones:
                self._fsync_dir(self.deleted_dir)
            self._fsync_dir(self.segments_dir)
        except OSError as exc:
            # Not an error of the run: its deletes are visible; only a power loss
            # could now bring some dumps back (restored again, never lost).
            logger.warning("dlq: cannot fsync the deletes in %s: %s", self.root, exc)

    def _write_tombstone(self, stem: str, indexes: set[int]) -> None:
        name = f"{stem}.{os.getpid()}-{time.time_ns()}-{next(_counter)}.del"
        tmp = self.tmp_dir / f"{name}.tmp"
        durable = self._unsynced is None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, "\n".join(str(i) for i in sorted(indexes)).encode() + b"\n")
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.deleted_dir / name)
            if durable:
                self._fsync_dir(self.deleted_dir)
            else:
                assert self._unsynced is not None
                self._unsynced.append(self.deleted_dir / name)
        except OSError as exc:
            raise DumpError(f"cannot delete dumps from segment {stem}: {exc}") from exc

    def _compact(self, seg: _Segment) -> bool:
        """Every record of ``seg`` is deleted: drop it (keep it if it had damage).

        True once the segment is out of ``segments/`` (gone or quarantined).
        """
        damaged = self._damaged.get(seg.stem)
        try:
            if damaged is None:
                damaged = bool(_Segment(seg.path, seg.path.read_bytes()).records()[1])
            if damaged:
                full = _Segment(seg.path, seg.path.read_bytes())
                offsets = [o for o, _ in full.records()[1]]
                where = self._quarantine(seg.path, f"damaged records at offsets {offsets}")
                if where.location == str(seg.path):  # the move failed; logged
                    return False
            else:
                seg.path.unlink()
        except FileNotFoundError:
            pass
        except (CorruptRecord, struct.error, ValueError, OSError) as exc:
            logger.error("dlq: cannot drop emptied segment %s: %s", seg.path, exc)
            return False
        self._damaged.pop(seg.stem, None)
        for name in self._listdir(self.deleted_dir):
            if name.startswith(seg.stem + "."):
                with contextlib.suppress(FileNotFoundError):
                    (self.deleted_dir / name).unlink()
        return True

    def cleanup_temp(self, older_than: float = 3600.0) -> int:
        """Remove temp files left by writers that died mid-flush; return how many.

        Such a file was never renamed into ``segments/``, so no reader ever saw it.
        """
        removed = 0
        cutoff = time.time() - older_than
        for name in self._listdir(self.tmp_dir):
            path = self.tmp_dir / name
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        return removed

    # -- retention (dlq/retention.py) ------------------------------------------
    # Works on segment headers only (no record is decoded): a segment's time is
    # the time in its name (when it was written, within durable_dlq_flush_interval
    # of the failures it holds), its live records are ``count`` minus its
    # tombstones, and a record's size is the segment's file size / ``count``.
    def _heads(self, names: list[str]) -> list[tuple[str, int, int, float]]:
        """``(stem, file size, record count, time)`` of our version's segments among
        ``names``, in their order."""
        cache: dict[str, tuple[int, int, float]] = self.__dict__.setdefault("_head_cache", {})
        heads: list[tuple[str, int, int, float]] = []
        for name in names:
            stem = name[: -len(SUFFIX)]
            head = cache.get(stem)
            if head is None:
                found = self._read_head(self.segments_dir / name)
                if found is None:
                    continue
                head = cache[stem] = (*found, self._stem_time(stem))
            if head[1] > 0:
                heads.append((stem, *head))
        return heads

    def _forget_heads(self, names: list[str]) -> None:
        cache: dict[str, tuple[int, int, float]] = self.__dict__.setdefault("_head_cache", {})
        if len(cache) > len(names):
            present = {n[: -len(SUFFIX)] for n in names}
            for stem in [s for s in cache if s not in present]:
                del cache[stem]

    def _within_bounds(
        self, names: list[str], deleted: dict[str, set[int]], retention: Retention, now: float
    ) -> bool:
        """True when only new segments came since the last pass found the store within
        its bounds, and with them it still is: then nothing needs reading but their
        headers.  (The common case after a flush; keeps it O(new segments) in Python.)"""
        state = self.__dict__.get("_retention_state")
        if state is None or state[1] != deleted:
            return False
        old_names, _, entries, nbytes, oldest = state
        if len(names) < len(old_names) or names[: len(old_names)] != old_names:
            return False
        for _, size, count, written in self._heads(names[len(old_names) :]):
            entries += count
            nbytes += size
            oldest = min(oldest, written)
        if (
            (retention.max_age is not None and oldest < now - retention.max_age)
            or (retention.max_entries is not None and entries > retention.max_entries)
            or (retention.max_bytes is not None and nbytes > retention.max_bytes)
        ):
            return False
        self.__dict__["_retention_state"] = (names, deleted, entries, nbytes, oldest)
        return True

    def _read_head(self, path: Path) -> tuple[int, int] | None:
        """``(size, count)``; count -1 for a segment not ours to touch; None if it vanished."""
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                head = fh.read(4096)
            magic, version, meta_len = HEAD.unpack_from(head, 0)
            if magic != MAGIC or version != self.version:
                return size, -1
            if len(head) < HEAD.size + meta_len:
                with open(path, "rb") as fh:
                    head = fh.read(HEAD.size + meta_len)
            meta = json.loads(head[HEAD.size : HEAD.size + meta_len])
            return size, int(meta.get("count", 0))
        except FileNotFoundError:
            return None
        except (OSError, struct.error, ValueError):
            return 0, -1  # damaged: the readers quarantine it, retention leaves it

    @staticmethod
    def _stem_time(stem: str) -> float:
        head = stem.split("-", 1)[0]
        return int(head) / 1e9 if head.isdigit() else 0.0

    @contextlib.contextmanager
    def _retention_lock(self) -> Iterator[bool]:
        fd = os.open(self.root / "retention.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False  # another process is enforcing the same bounds right now
                return
            yield True
        finally:
            os.close(fd)

    def enforce_retention(self, retention: Retention, now: float) -> dict[str, int]:
        """Delete what the bounds exclude (see :mod:`..retention`); drops per reason."""
        dropped = dict.fromkeys(("max_age", "max_entries", "max_bytes"), 0)
        with self._retention_lock() as held:
            if not held:
                return {}
            deleted = self._tombstones()
            names = [n for n in self._listdir(self.segments_dir) if n.endswith(SUFFIX)]
            if self._within_bounds(names, deleted, retention, now):
                return dropped
            self.__dict__.pop("_retention_state", None)
            self._forget_heads(names)
            # Per segment, oldest first: [stem, time, bytes per record, live records,
            # deleted indexes, record count].  Index lists are only made for the
            # segments something is dropped from, so a store within its bounds
            # costs one pass over the (cached) segment headers.
            segs: list[list[Any]] = []
            for stem, size, count, written in self._heads(names):
                gone = deleted.get(stem) or set()
                if count - len(gone) > 0:
                    segs.append([stem, written, size / count, count - len(gone), gone, count])
            victims: dict[str, list[str]] = {r: [] for r in dropped}
            if retention.max_age is not None:
                cutoff = now - retention.max_age
                expired = 0
                while expired < len(segs) and segs[expired][1] < cutoff:
                    victims["max_age"].extend(self._take(segs[expired], segs[expired][3]))
                    expired += 1
                del segs[:expired]
            for reason, bound in (
                ("max_entries", retention.max_entries),
                ("max_bytes", retention.max_bytes),
            ):
                if bound is None:
                    continue
                by_bytes = reason == "max_bytes"
                over = sum(s[3] * (s[2] if by_bytes else 1) for s in segs) - bound
                for seg in reversed(segs) if retention.drop_newest else iter(segs):
                    if over <= 0:
                        break
                    want = min(seg[3], math.ceil(over / seg[2]) if by_bytes else int(over))
                    taken = self._take(seg, want, newest=retention.drop_newest)
                    victims[reason].extend(taken)
                    over -= len(taken) * (seg[2] if by_bytes else 1)
                segs = [s for s in segs if s[3] > 0]
            for reason, ids in victims.items():
                if ids:
                    dropped[reason] = self.delete(ids)
            if any(dropped.values()):
                self._add_dropped(dropped)
            else:  # within its bounds: the next pass may start from here
                self.__dict__["_retention_state"] = (
                    names,
                    deleted,
                    sum(s[3] for s in segs),
                    sum(s[2] * s[3] for s in segs),
                    min((s[1] for s in segs), default=float("inf")),
                )
        return dropped

    @staticmethod
    def _take(seg: list[Any], count: int, *, newest: bool = False) -> list[str]:
        """Entry ids of ``count`` live records of ``seg`` (its oldest or newest), marked gone."""
        stem, _, _, _, gone, total = seg
        order = range(total - 1, -1, -1) if newest else range(total)
        taken: list[int] = []
        for i in order:
            if len(taken) >= count:
                break
            if i not in gone:
                taken.append(i)
        gone.update(taken)
        seg[3] -= len(taken)
        return [f"{stem}:{i:06d}" for i in taken]

    def _add_dropped(self, dropped: dict[str, int]) -> None:
        """Add to the persistent per-reason counts (called under the retention lock)."""
        counts = self.dropped_counts()
        for reason, n in dropped.items():
            counts[reason] = counts.get(reason, 0) + n
        path = self.root / "dropped.json"
        tmp = self.tmp_dir / f"dropped.{os.getpid()}.{next(_counter)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(counts, fh)
        os.rename(tmp, path)

    def dropped_counts(self) -> dict[str, int]:
        """Dumps dropped by retention so far, per reason, by every process of this host."""
        try:
            data = json.loads((self.root / "dropped.json").read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}
