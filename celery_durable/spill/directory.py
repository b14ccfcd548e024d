"""Where spill stores live: one directory per process under ``spill_dir``.

LevelDB allows one process per database, so every producer process opens its
own store named ``<hostname>-<pid>-<random8>``.  When a process dies its LevelDB
lock is released; :func:`find_orphans` recognises such stores by taking the
lock for a moment (never by trusting the pid in the name: pids are reused and
containers share hostnames), so a live process can adopt and drain them.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

import plyvel

from ..exceptions import SpillError
from .layout import StoreLocked, first_created, open_db, open_paths, read_state

__all__ = ["StoreInfo", "find_orphans", "list_stores", "new_store_path", "parse_name"]


@dataclass
class StoreInfo:
    """One store under ``spill_dir``, as ``celery durable spill ls`` shows it.

    ``alive`` means its LevelDB lock is held (by this or another live process).
    ``records``/``bytes`` are None when the store could not be read (locked by
    another process, or damaged: see ``error``).
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
    # A directory without CURRENT is not (yet) a LevelDB: its creator may be
    # between mkdir and taking the lock, so probing it could steal the lock.
    root = Path(spill_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and (p / "CURRENT").exists()]
    return sorted(found, key=_age_key)


def _age_key(path: Path) -> tuple[float, str]:
    # LOCK is created once, when the store is created, and never rewritten.
    try:
        return (path.joinpath("LOCK").stat().st_mtime, path.name)
    except OSError:
        return (path.stat().st_mtime, path.name)


def find_orphans(spill_dir: str | os.PathLike[str]) -> list[Path]:
    """Stores whose owner is dead (their LevelDB lock is free), oldest first.

    Stores open in this process are never returned.  Each candidate is opened
    and closed again to test its lock, so another process may still win the
    race to adopt it: opening it then raises :class:`StoreLocked`.
    """
    mine = open_paths()
    orphans = []
    for path in _candidates(spill_dir):
        if path.resolve() in mine:
            continue
        try:
            db = open_db(path, create=False)
        except StoreLocked:
            continue
        except SpillError:
            orphans.append(path)  # damaged but unowned: adopt it, peek/check sort it out
            continue
        db.close()
        orphans.append(path)
    return orphans


def list_stores(spill_dir: str | os.PathLike[str]) -> list[StoreInfo]:
    """Every store under ``spill_dir`` with its owner, liveness and backlog."""
    mine = open_paths()
    infos = []
    for path in _candidates(spill_dir):
        host, pid = parse_name(path)
        info = StoreInfo(path=path, hostname=host, pid=pid, alive=False)
        own = mine.get(path.resolve())
        if own is not None:
            info.alive = True
            info.records, info.bytes, info.quarantined = (
                len(own),
                own.backlog_bytes,
                own.quarantined,
            )
            info.oldest_created = own.oldest_created
            infos.append(info)
            continue
        try:
            db = open_db(path, create=False)
        except StoreLocked:
            info.alive = True
            infos.append(info)
            continue
        except SpillError as exc:
            info.error = str(exc)
            infos.append(info)
            continue
        try:
            state = read_state(db)
            info.records, info.bytes = state.records, state.nbytes
            info.quarantined = state.quarantined
            if state.records:
                info.oldest_created = first_created(db, state.acked)
        except (plyvel.Error, ValueError) as exc:
            info.error = f"cannot read counters: {exc}"
        finally:
            db.close()
        infos.append(info)
    return infos
