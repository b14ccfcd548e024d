"""``celery durable spill ls`` and ``spill check [--repair]`` on real stores."""

from __future__ import annotations

from pathlib import Path

import plyvel
from click.testing import CliRunner

from celery_durable.cli import durable
from celery_durable.spill import SpillRecord, SpillStore, new_store_path
from celery_durable.spill.layout import find_key


def make_store(spill_dir: Path, n: int) -> Path:
    path = new_store_path(spill_dir)
    with SpillStore(path) as store:
        store.extend([SpillRecord(body=b"%d" % i, exchange="", routing_key="q") for i in range(n)])
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(durable, list(args))
    return result.exit_code, result.output


def test_ls_lists_stores_with_owner_liveness_and_backlog(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    dead = make_store(spill_dir, 3)
    with SpillStore(new_store_path(spill_dir)) as mine:
        code, out = run("spill", "ls", "--spill-dir", str(spill_dir))
    assert code == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert out.splitlines()[0].split() == [
        "STORE", "HOST", "PID", "ALIVE", "RECORDS", "BYTES", "QUARANTINED", "OLDEST", "LOST"
    ]  # fmt: skip
    assert rows[dead.name][3:5] == ["no", "3"]
    assert rows[mine.path.name][3:5] == ["yes", "0"]
    assert "1 store(s) without a live owner hold 3 record(s)" in out


def test_ls_defaults_to_the_durable_dir(durable_dir: Path) -> None:
    code, out = run("spill", "ls")
    assert code == 0 and f"no spill stores under {durable_dir / 'spill'}" in out
    path = make_store(durable_dir / "spill", 2)
    code, out = run("spill", "ls")
    assert code == 0 and path.name in out


def test_check_passes_on_healthy_stores_and_skips_live_ones(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    dead = make_store(spill_dir, 2)
    with SpillStore(new_store_path(spill_dir)) as mine:
        code, out = run("spill", "check", "--spill-dir", str(spill_dir))
        assert code == 0, out
        assert f"{dead}: ok: 2 records" in out
        assert f"{mine.path}: skipped, in use" in out
        code, out = run("spill", "check", str(mine.path))
        assert code != 0 and "open in this process" in out


def test_check_fails_on_damage_and_repair_fixes_it(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    path = make_store(spill_dir, 3)
    db = plyvel.DB(str(path))
    key = find_key(db, 2)
    assert key is not None
    value = bytearray(db.get(key))
    value[-1] ^= 1
    db.put(key, bytes(value))
    db.close()
    code, out = run("spill", "check", "--spill-dir", str(spill_dir))
    assert code == 1
    assert "1 corrupt" in out and "run with --repair" in out
    code, out = run("spill", "check", "--repair", str(path))
    assert code == 0, out
    assert "repaired" in out and "1 quarantined" in out
    code, out = run("spill", "check", str(path))
    assert code == 0 and ": ok: 2 records" in out


def test_check_of_a_missing_store_fails_with_a_reason(tmp_path: Path) -> None:
    code, out = run("spill", "check", str(tmp_path / "nope"))
    assert code == 1 and "no such spill store" in out
