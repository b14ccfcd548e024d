"""``redis+sentinel://`` dump store URLs: parsing, errors and messages (no Sentinel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from celery_durable.dlq import open_store
from celery_durable.dlq.wal import DumpWAL
from celery_durable.exceptions import ConfigError, RestoreError
from celery_durable.restore.lock import run_lock
from celery_durable.sentinel_url import display_url, redis_client

URL = "redis+sentinel://u:pw@10.0.0.1:26380,10.0.0.2/3?master_name=m&sentinel_password=spw9"


def test_client_asks_every_sentinel_for_the_named_master() -> None:
    client = redis_client(URL, socket_timeout=2.0)
    pool = client.connection_pool
    assert pool.service_name == "m"
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "u", "pw")
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("10.0.0.1", 26380), ("10.0.0.2", 26379)]
    assert all(s["password"] == "spw9" and s["socket_timeout"] == 2.0 for s in sentinels)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://h1,h2/0", "master_name"),
        ("redis+sentinel://h1:x/0?master_name=m", "bad Sentinel address"),
        ("redis+sentinel://h1/zero?master_name=m", "must be a number"),
        ("redis+sentinel://h1/0?master_name=m&db=2", "unknown query keys"),
    ],
)
def test_malformed_urls_are_config_errors(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        redis_client(url)


def test_messages_never_show_the_password() -> None:
    shown = display_url(URL)
    assert "pw" not in shown and "spw9" not in shown and "10.0.0.2" in shown
    assert "pw" not in display_url("redis://:pw@h:1/0")


def test_dump_store_and_restore_lock_accept_the_scheme() -> None:
    store = open_store(URL)
    assert store.client.connection_pool.service_name == "m"
    with pytest.raises(RestoreError, match="master_name"):
        run_lock("redis+sentinel://h1/0")


def test_dump_log_for_a_sentinel_store_notes_its_url_without_password(tmp_path: Path) -> None:
    # Kombu's URL sanitizer raised on the host list: every capture was dropped.
    log = DumpWAL(tmp_path / "wal", store_url=URL)
    noted = (tmp_path / "wal" / "store").read_text()
    assert "10.0.0.2" in noted and "pw" not in noted
    log.close()
