"""Who can read a spill store, and a spill_dir that cannot be used (issues 10.4, 10.6).

A real second local user (``nobody``, through ``setpriv``; CI runs as root), a
real producer process spilling through the durable transport, a real read-only
tmpfs mount.  Before the fix, spill directories were 0755 and LevelDB's files
0644: ``nobody`` read a task's argument straight out of the store's ``.log``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from celery_durable.exceptions import SpillError
from celery_durable.spill import SpillRecord, SpillStore, new_store_path
from tests.helpers.processes import Proc, python
from tests.helpers.redis_server import free_port
from tests.helpers.wait import wait_for

pytestmark = pytest.mark.chaos

SECRET = "card-4111-1111-1111-1111-cvv-737"
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
UNPRIVILEGED_ROOT = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]

PRODUCER = """
import sys, threading
import kombu
import celery_durable  # noqa: F401
url = "durable+redis://127.0.0.1:%s/0" % sys.argv[1]
with kombu.Connection(url, transport_options={"publish_timeout": 0.2}) as conn:
    producer = conn.Producer()
    for i in range(20):
        producer.publish({"card": sys.argv[2], "i": i}, routing_key="payments", serializer="json")
    print("published", flush=True)
    if sys.argv[3] == "hold":
        threading.Event().wait()
"""


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SETPRIV, *argv], capture_output=True, text=True, timeout=60)


def nobody_finds_secret(root: Path) -> subprocess.CompletedProcess[str]:
    # -a: LevelDB files are binary; -r: every file nobody can reach.
    return as_nobody("grep", "-r", "-a", "-l", SECRET, str(root))


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A world-traversable parent (pytest's tmp_path is 0700: it would hide everything)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to read files as another user (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="durable-modes-"))
    os.chmod(base, 0o755)
    # Control: a file nobody *can* read here, so a "not found" below means the modes.
    (base / "control.txt").write_text(SECRET)
    os.chmod(base / "control.txt", 0o644)
    old = os.umask(0o022)  # the usual default, under which LevelDB makes 0644 files
    monkeypatch.setenv("CELERY_DURABLE_DIR", str(base / "state"))
    try:
        yield base
    finally:
        os.umask(old)
        shutil.rmtree(base, ignore_errors=True)


def modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def spill_through_the_transport(base: Path, hold: bool) -> Proc:
    proc = python(
        _script(base), str(free_port()), SECRET, "hold" if hold else "exit", log=base / "p.log"
    )
    wait_for(lambda: "published" in proc.log.read_text(), timeout=60, message=proc.output)
    return proc


def _script(base: Path) -> Path:
    path = base / "producer.py"
    path.write_text(PRODUCER)
    return path


def test_another_user_cannot_read_a_spilled_payload(shared_tmp: Path) -> None:
    state = shared_tmp / "state"
    assert nobody_finds_secret(shared_tmp).stdout.strip() == str(shared_tmp / "control.txt")

    proc = spill_through_the_transport(shared_tmp, hold=True)
    try:
        logs = list(state.rglob("*.log"))
        assert logs and any(SECRET.encode() in p.read_bytes() for p in logs)  # plain text there
        found = nobody_finds_secret(state)  # while the owner is alive, the .log open
        assert found.stdout == "" and "Permission denied" in found.stderr, found
    finally:
        proc.kill()
    found = nobody_finds_secret(state)  # after a SIGKILL: the store waits for adoption
    assert found.stdout == "" and "Permission denied" in found.stderr, found
    dirs = {k: v for k, v in modes(state).items() if (state / k).is_dir()}
    assert dirs and set(dirs.values()) == {0o700}, dirs
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_files_are_owner_only_after_a_clean_exit(shared_tmp: Path) -> None:
    state = shared_tmp / "state"
    proc = spill_through_the_transport(shared_tmp, hold=False)
    assert proc.wait(60) == 0, proc.output()
    found = modes(state)
    files = {k: v for k, v in found.items() if (state / k).is_file()}
    assert any(k.endswith(".log") for k in files) and set(files.values()) == {0o600}, found
    assert {v for k, v in found.items() if (state / k).is_dir()} == {0o700}, found
    assert nobody_finds_secret(state).stdout == ""


def test_a_store_left_0755_by_an_older_version_is_tightened_on_open(shared_tmp: Path) -> None:
    root = shared_tmp / "old"
    os.mkdir(root, 0o755)
    path = root / "host-1-0000abcd"
    with SpillStore(path) as store:
        store.append(SpillRecord(body=SECRET.encode(), exchange="", routing_key="q"))
    for entry in [path, *path.iterdir()]:
        os.chmod(entry, 0o755 if entry.is_dir() else 0o644)  # what 0.x left behind
    assert nobody_finds_secret(root).stdout.strip() != ""  # readable, as it was
    with SpillStore(path):
        pass
    assert nobody_finds_secret(root).stdout == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir() if p.is_file()} == {0o600}


READ_ONLY_WRITER = """
import sys
from celery_durable.exceptions import SpillError
from celery_durable.spill import SpillStore
try:
    SpillStore(sys.argv[1])
except SpillError as exc:
    print(type(exc).__name__, exc, flush=True)
"""


def test_unwritable_spill_dir_is_spill_error_with_the_os_reason(shared_tmp: Path) -> None:
    locked = shared_tmp / "nobody-owned"
    os.mkdir(locked, 0o755)  # others may enter it, not write it
    os.chown(locked, pwd.getpwnam("nobody").pw_uid, -1)
    script = shared_tmp / "ro.py"
    script.write_text(READ_ONLY_WRITER)
    # The writer is root without capabilities (so "other" to that directory), not
    # nobody: a pyenv interpreter under /root (0700) cannot even start as nobody.
    done = subprocess.run(
        [*UNPRIVILEGED_ROOT, sys.executable, str(script), str(locked / "spill" / "store")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done
    assert done.stdout.startswith("SpillError spill_dir: cannot create"), done
    assert "Permission denied" in done.stdout, done


def test_read_only_mount_is_spill_error_with_the_os_reason(shared_tmp: Path) -> None:
    mount = shared_tmp / "ro"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)])
    if ok.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(SpillError, match="Read-only file system") as info:
            SpillStore(new_store_path(mount / "spill"))
        assert type(info.value) is SpillError
        assert "spill_dir" in str(info.value)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
