"""``check(path, repair=False)``: an integrity check a user can run on a closed store.

The store's own reader already quarantines what it cannot decode as it goes;
``check`` does the same for the whole store at once, so an operator can see the
damage (``celery durable spill check``) and, with ``repair=True``, run LevelDB's
``repair_db``, move undecodable records to quarantine and rewrite the counters
from a full scan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plyvel

from .. import metrics
from ..exceptions import CorruptRecord, SpillError, VersionMismatch
from .layout import (
    META_KEY,
    QUAR,
    REC,
    StoreLocked,
    is_lock_error,
    open_db,
    open_paths,
    read_state,
    seq_of,
)
from .record import decode

__all__ = ["CheckReport", "check"]


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
        """Readable, nothing corrupt left in the backlog, and the counters match the data."""
        if self.errors:
            return False
        if self.repaired:
            return True
        return (
            self.corrupt == 0
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
    """Scan a closed store: decode every record, recount, compare with the counters.

    Raises :class:`StoreLocked` when the store is open (here or in a live
    process).  Problems found are in the report, never raised.
    """
    path = Path(path)
    report = CheckReport(path=path)
    if path.resolve() in open_paths():
        raise StoreLocked(f"spill store {path} is open in this process")
    if not path.is_dir():
        report.errors.append("no such spill store directory")
        return report
    if not (path / "CURRENT").exists() and not repair:
        report.errors.append("not a LevelDB store (no CURRENT file); try --repair")
        return report
    if repair:
        try:
            plyvel.repair_db(str(path))
        except plyvel.Error as exc:
            if is_lock_error(exc):
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
    except (plyvel.Error, ValueError) as exc:
        report.errors.append(f"read failed: {exc}")
    finally:
        db.close()
    return report


def _scan(db: plyvel.DB, report: CheckReport, repair: bool) -> None:
    state = read_state(db)
    report.meta_records, report.meta_bytes = state.records, state.nbytes
    bad: list[tuple[bytes, bytes]] = []
    head: int | None = None
    with db.iterator(prefix=REC) as it:
        for key, value in it:
            if head is None:
                head = seq_of(key)
            try:
                decode(value)
            except (CorruptRecord, VersionMismatch):
                bad.append((key, value))
                report.corrupt += 1
                continue
            report.records += 1
            report.bytes += len(value)
    with db.iterator(prefix=QUAR, include_value=False) as it:
        report.quarantined = sum(1 for _ in it)
    if not repair:
        return
    if head is not None:
        state.acked = min(state.acked, head - 1)  # never hide a stored record
    state.quarantined = max(state.quarantined, report.quarantined + len(bad))
    state.appended = max(state.appended, report.bytes)
    state.removed = state.next_seq - 1 - report.records
    state.removed_bytes = state.appended - report.bytes
    with db.write_batch(sync=True) as wb:
        for key, value in bad:
            wb.delete(key)
            wb.put(QUAR + key[1:], value)
        wb.put(META_KEY, state.pack())
    report.quarantined += len(bad)
    report.repaired = True
    if bad:
        metrics.CORRUPT_RECORDS.labels(store="spill").inc(len(bad))
