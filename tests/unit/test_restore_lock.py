"""Restore lock keys and errors (no server needed: the failures are the point)."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_durable.exceptions import RestoreError
from celery_durable.restore.lock import REDIS_LOCK_KEY, redis_lock_target, run_lock
from tests.helpers.redis_server import free_port


def test_lock_key_follows_the_store_prefix() -> None:
    assert redis_lock_target("redis://h:1/0?prefix=fleet-a&ssl_cert_reqs=none") == (
        "redis://h:1/0?ssl_cert_reqs=none",
        "fleet-a:restore-lock",
    )
    # The default prefix keeps the old key: old and new processes still exclude each other.
    assert redis_lock_target("redis://h:1/0") == ("redis://h:1/0", REDIS_LOCK_KEY)


def test_an_unreachable_redis_is_a_restore_error_naming_the_lock() -> None:
    lock = run_lock(f"redis://:secret@127.0.0.1:{free_port()}/0?prefix=fleet-a")
    expected = "cannot take the restore lock fleet-a:restore-lock"
    with pytest.raises(RestoreError, match=expected) as e:
        lock.acquire()
    assert "secret" not in str(e.value)
    lock.release()


def test_a_bad_redis_url_is_a_restore_error() -> None:
    lock = run_lock("redis://127.0.0.1:1/0?prefix=x&no_such_option=1")
    with pytest.raises(RestoreError, match=r"x:restore-lock.*no_such_option"):
        lock.acquire()


def test_an_unusable_lock_path_is_a_restore_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    lock = run_lock((blocker / "dlq").as_uri())
    with pytest.raises(RestoreError, match="cannot open the restore lock"):
        lock.acquire()
