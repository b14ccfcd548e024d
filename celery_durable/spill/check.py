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
from ..files import private_files
from .layout import (
    META_KEY,
    QUAR,
    REC,
    StoreLocked,
    StoreState,
    damage_note,
    is_lock_error,
    lost_tables,
    note_recovery_errors,
    open_db,
    open_paths,
    read_state,
    seq_of,
)
from .record import decode

__all__ = ["CheckReport", "check"]


@dataclass
class CheckReport:
    """What :func:`check` found (and fixed, with ``repair=True``).

    ``meta_records`` is what the store's counters expect (the meta key, and the
    highest sequence number in the data and in LevelDB's manifest); ``missing``
    how many of those no readable key holds now (after a repair: what the
    repair could not recover); ``lost`` the records counted lost before this
    check (persistent: a store that lost data stays damaged, see ``ok``).
    """

    path: Path
    records: int = 0
    bytes: int = 0
    corrupt: int = 0
    quarantined: int = 0
    meta_records: int | None = None
    meta_bytes: int | None = None
    missing: int = 0
    lost: int = 0
    #: False when the meta key was lost too: ``missing`` is then an upper bound.
    counters_known: bool = True
    #: Unreadable data LevelDB reported (dropped log bytes, tables set aside in ``lost/``).
    damage: str | None = None
    repaired: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Readable, nothing lost or corrupt left in the backlog, counters match the data."""
        if self.errors or self.missing or self.lost or self.damage:
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
            "missing": self.missing,
            "lost": self.lost,
            "counters_known": self.counters_known,
            "damage": self.damage,
            "repaired": self.repaired,
            "errors": list(self.errors),
        }


def check(path: str | os.PathLike[str], *, repair: bool = False) -> CheckReport:
    """Scan a closed store: decode every record, recount, compare with the counters.

    The counters are read *before* a repair too, so records the repair could
    not bring back are reported as ``missing`` rather than forgotten.  With
    ``repair=True`` they are added to the store's persistent ``lost`` counter
    (the store is then quarantined, never deleted, once drained).

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
    before: StoreState | None = None
    if (path / "CURRENT").exists():
        try:
            before = _counters(path)
        except StoreLocked:
            raise
        except (SpillError, plyvel.Error, ValueError) as exc:
            if not repair:
                report.errors.append(f"{exc}; try --repair")
                return report
    elif not repair:
        report.errors.append("damaged: the CURRENT file is missing; --repair rebuilds it")
        return report
    if repair:
        try:
            plyvel.repair_db(str(path))
        except plyvel.Error as exc:
            if is_lock_error(exc):
                raise StoreLocked(f"spill store {path} is in use by a live process") from exc
            report.errors.append(f"repair_db failed: {exc}")
            return report
        finally:
            private_files(path)
            private_files(path / "lost")
        note_recovery_errors(path)
    try:
        db = open_db(path, create=False)
    except StoreLocked:
        raise
    except SpillError as exc:
        report.errors.append(str(exc))
        return report
    try:
        _scan(db, report, repair, before)
    except (plyvel.Error, ValueError) as exc:
        report.errors.append(f"read failed: {exc}")
    finally:
        db.close()
        private_files(path)
    report.damage = damage_note(path)
    tables = lost_tables(path)
    if tables:
        set_aside = f"repair set aside unreadable tables in lost/: {', '.join(tables)}"
        report.damage = f"{report.damage}; {set_aside}" if report.damage else set_aside
    return report


def _counters(path: Path) -> StoreState:
    db = open_db(path, create=False)
    try:
        return read_state(db)
    finally:
        db.close()


def _expected(state: StoreState) -> int:
    return state.records + state.missing  # read_state moved the unreadable ones to missing


def _scan(db: plyvel.DB, report: CheckReport, repair: bool, before: StoreState | None) -> None:
    state = read_state(db)
    if before is not None and (not state.counters_known or _expected(before) > _expected(state)):
        state = before  # the repair lost counters it had: trust the earlier ones
    report.meta_records = state.records + state.missing
    report.meta_bytes = state.nbytes + state.missing_bytes
    report.lost, report.counters_known = state.lost, state.counters_known
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
    report.missing = max(0, report.meta_records - report.records - report.corrupt)
    if not repair:
        return
    if head is not None:
        state.acked = min(state.acked, head - 1)  # never hide a stored record
    state.lost += report.missing
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
    if report.missing:
        metrics.RECORDS_LOST.inc(report.missing)
