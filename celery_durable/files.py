"""Owner-only files: ``$CELERY_DURABLE_DIR`` holds task payloads.

Spilled messages and dumps carry task arguments (tokens, personal data), so
every directory the package creates is ``0700`` and every file ``0600``, under
any umask.  The directory modes are what protects the data: LevelDB creates its
own files (``0644`` under the usual umask), and keeps creating them after open
(compactions write new tables, a full memtable a new log), which no umask set
around ``plyvel.DB(...)`` could cover; inside a ``0700`` directory another user
cannot open them whatever their mode.  Files are still made ``0600`` after each
open and close so a copy made with ``cp -a`` or a backup keeps them private.

``os.umask`` is not used on purpose: it is process-wide, so setting it around
an open would also change the modes of files other threads create meanwhile.

Directories that already exist are left alone, except those :func:`private_dir`
is told to tighten (stores created ``0755`` by older versions).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from .exceptions import ConfigError, DurableError

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_files"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(
    path: str | os.PathLike[str],
    *,
    setting: str,
    error: type[DurableError],
    tighten: bool = False,
) -> Path:
    """Create ``path`` and any missing parent ``0700``; return it.

    ``setting`` names the option the path comes from, for the error: a path
    component that is a regular file is a :class:`ConfigError` naming it; any
    other failure (read-only file system, permission denied) is ``error``
    with the OS reason.  ``tighten`` makes an existing ``path`` we own ``0700``.
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while True:
        try:
            st = probe.stat()
        except FileNotFoundError:
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
            continue
        except NotADirectoryError:
            missing.append(probe)
            probe = probe.parent
            continue
        except OSError as exc:
            raise error(f"{setting}: cannot use {path}: {_reason(exc)}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{setting}={str(path)!r}: {probe} is not a directory")
        break
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise ConfigError(
                    f"{setting}={str(path)!r}: {directory} is not a directory"
                ) from None
            continue  # another process made it first
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise ConfigError(f"{setting}={str(path)!r}: not a directory") from exc
            raise error(f"{setting}: cannot create {directory}: {_reason(exc)}") from exc
        _chmod(directory, DIR_MODE)  # mkdir's mode is masked by the umask
    if tighten and path not in missing:
        st = path.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            _chmod(path, DIR_MODE)
    return path


def private_files(directory: str | os.PathLike[str]) -> None:
    """Make every regular file directly in ``directory`` ``0600`` (best effort)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mode & 0o077:
                _chmod(Path(entry.path), FILE_MODE)
        except OSError:
            continue  # removed meanwhile (LevelDB deletes obsolete files)


def _chmod(path: Path, mode: int) -> None:
    # Not ours, or a read-only mount: the open that follows reports what matters.
    with contextlib.suppress(OSError):
        os.chmod(path, mode)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
