"""``spill_dir`` that cannot be used: a clear error naming the setting (issue 10.6).

Before: ``spill_dir`` pointing at a regular file raised a raw ``NotADirectoryError``
(``FileExistsError`` for the file itself) from deep inside the transport.  The
read-only and permission cases run for real in tests/chaos/test_spill_files.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

import celery_durable  # noqa: F401 - registers the alias
from celery_durable.exceptions import ConfigError, SpillError
from celery_durable.files import private_dir
from celery_durable.transport.spiller import shutdown_all


@pytest.fixture(autouse=True)
def _stop_spillers() -> Iterator[None]:
    yield
    shutdown_all(0.0)


@pytest.mark.parametrize("below", ["", "sub/dir"])
def test_spill_dir_naming_a_regular_file_is_a_config_error(tmp_path: Path, below: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    spill_dir = blocker / below if below else blocker
    conn = kombu.Connection(
        "durable+redis://127.0.0.1:1/0",
        transport_options={"spill_dir": str(spill_dir), "publish_timeout": 0.2},
    )
    try:
        with pytest.raises(ConfigError, match=f"spill_dir=.*{blocker} is not a directory"):
            conn.transport  # noqa: B018 - building it (or, lazily, the first spill) checks
            conn.Producer().publish({"x": 1}, routing_key="q")
    finally:
        conn.release()
    assert blocker.read_text() == "x"


def test_private_dir_creates_every_missing_level_owner_only(tmp_path: Path) -> None:
    leaf = private_dir(tmp_path / "a" / "b" / "c", setting="spill_dir", error=SpillError)
    for path in (leaf, leaf.parent, leaf.parent.parent):
        assert path.stat().st_mode & 0o777 == 0o700


def test_private_dir_leaves_an_existing_directory_alone_unless_told(tmp_path: Path) -> None:
    mine = tmp_path / "chosen-by-the-user"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)
    private_dir(mine, setting="spill_dir", error=SpillError)
    assert mine.stat().st_mode & 0o777 == 0o755
    private_dir(mine, setting="spill_dir", error=SpillError, tighten=True)
    assert mine.stat().st_mode & 0o777 == 0o700
