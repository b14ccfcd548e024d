from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, killed after the test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def durable_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own CELERY_DURABLE_DIR (spill stores, dumps)."""
    path = tmp_path / "durable"
    monkeypatch.setenv("CELERY_DURABLE_DIR", str(path))
    return path
