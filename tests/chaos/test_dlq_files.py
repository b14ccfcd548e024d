"""Who can read a ``file://`` dump store and its restore lock (issue 14.4).

A real second local user (``nobody``, through ``setpriv``; CI runs as root), the
usual umask 022.  Before the fix, the dump store created the directories above
it with ``mkdir(parents=True)`` (0755: ``nobody`` listed them) and the restore
lock's directory the same way.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_durable.dlq.base import DumpEntry
from celery_durable.dlq.stores import open_store
from celery_durable.restore.lock import run_lock

pytestmark = pytest.mark.chaos

SECRET = "card-4111-1111-1111-1111-cvv-737"
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SETPRIV, *argv], capture_output=True, text=True, timeout=60)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A world-traversable base (pytest's tmp_path is 0700: it would hide everything)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to read files as another user (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="durable-dlq-modes-"))
    os.chmod(base, 0o755)
    old = os.umask(0o022)  # the usual default, under which mkdir makes 0755 directories
    try:
        yield base
    finally:
        os.umask(old)
        shutil.rmtree(base, ignore_errors=True)


def dir_modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, _files in os.walk(root):
        for name in dirnames:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return out


def entry() -> DumpEntry:
    return DumpEntry(
        task_id="00000000-0000-4000-8000-000000000001",
        task_name="payments.charge",
        args=[SECRET],
        kwargs={},
        headers={},
        properties={},
        delivery_info={"exchange": "", "routing_key": "payments"},
        embed={},
        exc_type="ValueError",
        exc_message="declined",
        traceback="",
        hostname="celery@test",
        failed_at=time.time(),
    )


def test_a_file_dump_store_and_the_directories_it_creates_are_owner_only(
    shared_tmp: Path,
) -> None:
    top = shared_tmp / "state"
    root = top / "fleet" / "dumps"
    store = open_store(root.as_uri())
    try:
        store.write([entry()])
    finally:
        store.close()
    assert any(SECRET.encode() in p.read_bytes() for p in root.rglob("*") if p.is_file())
    modes = dir_modes(top)
    assert set(modes.values()) == {0o700}, modes  # "state" and "fleet" were 0755
    listing = as_nobody("ls", str(top / "fleet"))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
    found = as_nobody("grep", "-r", "-a", "-l", SECRET, str(shared_tmp))
    assert found.stdout == "", found


def test_the_restore_lock_and_its_directory_are_owner_only(shared_tmp: Path) -> None:
    top = shared_tmp / "locks"
    dumps = top / "fleet" / "dumps"
    lock = run_lock(dumps.as_uri())
    assert lock.acquire()
    try:
        path = dumps.with_name("dumps.restore.lock")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        modes = dir_modes(top)
        assert set(modes.values()) == {0o700}, modes
        listing = as_nobody("ls", str(top))
        assert listing.returncode != 0 and "Permission denied" in listing.stderr, listing
    finally:
        lock.release()


def test_a_restore_lock_left_0644_by_an_older_version_is_tightened(shared_tmp: Path) -> None:
    dumps = shared_tmp / "old" / "dumps"
    dumps.parent.mkdir(mode=0o700)
    path = dumps.with_name("dumps.restore.lock")
    path.touch()
    os.chmod(path, 0o644)
    lock = run_lock(dumps.as_uri())
    assert lock.acquire()
    lock.release()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
