"""The overview reads the producers' breaker and backlog from their multiprocess metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from celery_durable.web.overview import producer_metrics

SET_GAUGES = """
from celery_durable import metrics
metrics.BREAKER_OPEN.set({open})
metrics.BACKLOG_RECORDS.set({backlog})
metrics.DRAIN_LAG.set(12.5)
"""


def producer(path: Path, open: int, backlog: int) -> None:
    """A producer process that leaves its gauges in the multiprocess directory."""
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(path))
    code = SET_GAUGES.format(open=open, backlog=backlog)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_no_directory_no_numbers(tmp_path: Path) -> None:
    assert producer_metrics(str(tmp_path / "missing")) is None
    assert producer_metrics(str(tmp_path)) is None


def test_breaker_and_backlog_from_the_producers_files(tmp_path: Path) -> None:
    producer(tmp_path, open=0, backlog=3)
    producer(tmp_path, open=1, backlog=4)
    found = producer_metrics(str(tmp_path))
    assert found is not None
    assert found["celery_durable_breaker_open"] == 1
    assert found["celery_durable_drain_lag_seconds"] == 12.5
    assert found["celery_durable_backlog_records"] >= 4
