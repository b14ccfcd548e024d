from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kombu
import pytest

from tests.helpers.redis_server import RedisServer
from tests.integration.restore_support import RestoreHarness

# tests/integration/kombu_mixins is Kombu 5.7.0's own integration suite, vendored
# unchanged: it imports and tests what only Kombu 5.7 has (batch publishing,
# SUBCLIENT_MAX_MISSED_HEALTH_CHECKS), so only the newest tier of .ci/run runs it.
collect_ignore = ["integration/test_kombu_mixins.py"] if kombu.VERSION < (5, 7) else []


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


@pytest.fixture
def h(redis_server: RedisServer, tmp_path: Path, durable_dir: Path) -> Iterator[RestoreHarness]:
    """The restore tests' harness: broker, workers, beat and dump stores (restore_support)."""
    harness = RestoreHarness(redis_server, tmp_path, durable_dir)
    try:
        yield harness
    finally:
        harness.close()
