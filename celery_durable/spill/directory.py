"""Where spill stores live: one directory per process under ``spill_dir``.

LevelDB allows one process per database, so every producer process opens its
own store named ``<hostname>-<pid>-<random8>``.  When a process dies its LevelDB
lock is released; :func:`find_orphans` recognises such stores by taking the
lock for a moment (never by trusting the pid in the name: pids are reused and
containers share hostnames), so a live process can adopt and drain them.

A store with unreadable data is never deleted: it is moved to
``spill_dir/quarantine/`` (:func:`quarantine_store`) with a ``QUARANTINED``
note saying why, logged and counted
(``celery_durable_spill_stores_quarantined``).  :func:`list_stores` shows every
directory that looks like a store, readable or not, quarantined ones included.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import plyvel

from .. import metrics
from ..exceptions import SpillError, StoreDamaged
from ..files import FILE_MODE, private_dir
from .layout import (
    StoreLocked,
    damage_note,
    first_created,
    has_data_files,
    open_db,
    open_paths,
    read_error,
    read_state,
)

__all__ = [
    "QUARANTINE",
    "StoreInfo",
    "find_orphans",
    "list_stores",
    "new_store_path",
    "parse_name",
    "quarantine_store",
    "set_aside_damaged",
]

logger = logging.getLogger(__name__)

#: Sub-directory of ``spill_dir`` holding stores with unreadable data.
QUARANTINE = "quarantine"
#: The note written into a quarantined store: when and why.
NOTE = "QUARANTINED"


@dataclass
class StoreInfo:
    """One store under ``spill_dir``, as ``celery durable spill ls`` shows it.

    ``alive`` means its LevelDB lock is held (by this or another live process).
    ``records``/``bytes`` are None when the store could not be read (locked by
    another process, or damaged: see ``error``).  ``lost`` counts records the
    counters expect that LevelDB cannot read (recorded ones plus, for a closed
    store, those found missing now).  ``quarantine`` holds the note of a store
    moved to ``quarantine/`` (None for an active store).
    """

    path: Path
    hostname: str
    pid: int | None
    alive: bool
    records: int | None = None
    bytes: int | None = None
    quarantined: int | None = None
    #: ``created`` time of the oldest waiting record (None: empty or unreadable).
    oldest_created: float | None = None
    error: str | None = None
    lost: int | None = None
    quarantine: str | None = None

    @property
    def damaged(self) -> bool:
        """Unreadable, records lost, or in quarantine: never deleted, needs an operator."""
        return bool(self.quarantine is not None or self.lost or self.error)


def new_store_path(spill_dir: str | os.PathLike[str]) -> Path:
    """A fresh store path ``spill_dir/<hostname>-<pid>-<random8>`` (not created yet)."""
    host = socket.gethostname().replace(os.sep, "_") or "localhost"
    return Path(spill_dir) / f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def parse_name(path: Path) -> tuple[str, int | None]:
    """``(hostname, pid)`` from a store directory name (pid None if it does not parse)."""
    parts = path.name.rsplit("-", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return path.name, None


def _candidates(spill_dir: str | os.PathLike[str]) -> list[Path]:
    # Every directory holding LevelDB data, CURRENT or not (a store that lost
    # its CURRENT is damaged, not absent).  An empty directory is skipped: its
    # creator may be between mkdir and taking the lock, so probing it could
    # steal the lock; LevelDB writes data files only once it holds the lock.
    root = Path(spill_dir)
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.name != QUARANTINE and p.is_dir() and ((p / "CURRENT").exists() or has_data_files(p))
    ]
    return sorted(found, key=_age_key)


def _age_key(path: Path) -> tuple[float, str]:
    # LOCK is created once, when the store is created, and never rewritten.
    try:
        return (path.joinpath("LOCK").stat().st_mtime, path.name)
    except OSError:
        return (path.stat().st_mtime, path.name)


def set_aside_damaged(path: str | os.PathLike[str], exc: StoreDamaged) -> None:
    """Quarantine an unowned store LevelDB cannot read; log if even the move fails."""
    try:
        quarantine_store(path, str(exc))
    except SpillError as move:
        logger.error("celery-durable: %s; %s", exc, move)


def quarantine_store(path: str | os.PathLike[str], reason: str) -> Path:
    """Move the (closed) store ``path`` to ``quarantine/`` next to it; return the new path.

    Never deletes anything: LevelDB's ``lost/`` files and the damaged tables
    are what ``spill check --repair`` and an operator work from.  Logged at
    error level and counted in ``celery_durable_spill_stores_quarantined``.
    """
    path = Path(path)
    box = private_dir(path.parent / QUARANTINE, setting="spill_dir", error=SpillError)
    target = box / path.name
    if target.exists():
        target = box / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}.{secrets.token_hex(2)}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        # Another process probing the same orphan moved it first.
        logger.info("spill store %s already moved aside by another process", path)
        return target
    except OSError as exc:
        raise SpillError(f"cannot move damaged spill store {path} aside: {exc}") from exc
    try:
        fd = os.open(target / NOTE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {reason}\n")
    except OSError as exc:  # pragma: no cover - the move worked, the note is a courtesy
        logger.warning("spill store %s: cannot write %s: %s", target, NOTE, exc)
    metrics.STORES_QUARANTINED.inc()
    logger.error(
        "celery-durable: spill store %s quarantined as %s (never deleted): %s",
        path,
        target,
        reason,
    )
    return target


def quarantine_note(path: Path) -> str | None:
    """The reason a quarantined store was moved aside (None if the note is missing)."""
    try:
        return (path / NOTE).read_text(errors="replace").strip()
    except OSError:
        return None


def find_orphans(spill_dir: str | os.PathLike[str]) -> list[Path]:
    """Stores whose owner is dead (their LevelDB lock is free), oldest first.

    Stores open in this process are never returned.  Each candidate is opened
    and closed again to test its lock, so another process may still win the
    race to adopt it: opening it then raises :class:`StoreLocked`.

    An unowned store LevelDB cannot open because it is damaged (corruption, a
    missing ``CURRENT``) is not returned: it is quarantined right here
    (:func:`quarantine_store`: logged, counted, never deleted).  One that fails
    for another reason (permissions, no file handles) is logged and skipped:
    the next scan tries again.
    """
    mine = open_paths()
    orphans = []
    for path in _candidates(spill_dir):
        if path.resolve() in mine:
            continue
        try:
            db = open_db(path, create=False)
            try:
                read_state(db)  # the seeks adoption will do: a table LevelDB cannot read
            except (plyvel.Error, ValueError) as exc:
                raise read_error(path, exc) from exc
            finally:
                db.close()
        except StoreLocked:
            continue
        except StoreDamaged as exc:
            set_aside_damaged(path, exc)
            continue
        except SpillError as exc:
            logger.error("celery-durable: cannot adopt spill store %s: %s", path, exc)
            continue
        orphans.append(path)
    return orphans


def list_stores(spill_dir: str | os.PathLike[str]) -> list[StoreInfo]:
    """Every store under ``spill_dir`` with its owner, liveness and backlog.

    Read-only: damaged stores are reported (``error``, ``lost``), never moved;
    quarantined stores (``spill_dir/quarantine/*``) come last.
    """
    root = Path(spill_dir)
    infos = [_info(path) for path in _candidates(root)]
    for path in _candidates(root / QUARANTINE):
        info = _info(path)
        info.quarantine = quarantine_note(path) or "quarantined"
        infos.append(info)
    return infos


def _info(path: Path) -> StoreInfo:
    host, pid = parse_name(path)
    info = StoreInfo(path=path, hostname=host, pid=pid, alive=False)
    own = open_paths().get(path.resolve())
    if own is not None:
        info.alive = True
        info.records, info.bytes = len(own), own.backlog_bytes
        info.quarantined, info.lost = own.quarantined, own.lost
        info.oldest_created = own.oldest_created
        info.error = own.damage
        return info
    try:
        db = open_db(path, create=False)
    except StoreLocked:
        info.alive = True
        return info
    except SpillError as exc:
        info.error = str(exc)
        return info
    info.error = damage_note(path)
    try:
        state = read_state(db)
        info.records, info.bytes = state.records, state.nbytes
        info.quarantined = state.quarantined
        info.lost = state.lost + state.missing
        if state.missing:
            bound = "" if state.counters_known else "up to "
            info.error = (
                f"{bound}{state.missing} records counted but unreadable (damaged table or log)"
            )
        if state.records:
            info.oldest_created = first_created(db, state.acked)
    except (plyvel.Error, ValueError) as exc:
        info.error = str(read_error(path, exc))
    finally:
        db.close()
    return info
