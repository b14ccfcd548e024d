"""``celery durable status``: a probe is reported as a probe, producers' breakers from metrics.

Issue 9.10: ``status`` printed a fresh reachability probe as the "breaker" state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from celery import Celery
from click.testing import CliRunner

from celery_durable.cli import durable
from celery_durable.cli.status import producer_breakers
from tests.helpers.redis_server import free_port

# A producer process as the metrics see it: sets its breaker gauge, then waits.
PRODUCER = """
import sys
from celery_durable import metrics
metrics.BREAKER_OPEN.set(int(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Celery:
    monkeypatch.setenv("CELERY_DURABLE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    app = Celery("status", broker=f"durable+redis://127.0.0.1:{free_port()}/0")
    app.conf.durable_dlq_url = (tmp_path / "dlq").as_uri()
    return app


def status(app: Celery, *args: str) -> str:
    result = CliRunner().invoke(durable, ["status", *args], obj=SimpleNamespace(app=app))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_probe_is_called_a_probe_and_the_old_key_stays(app: Celery) -> None:
    spill = json.loads(status(app, "--json"))["spill"]
    assert spill["probe"] == "unreachable"
    assert spill["breaker"] == "open"  # kept for --json readers: the probe, as before
    assert spill["producer_breakers"] is None
    text = status(app)
    assert "probe unreachable" in text and "breaker" not in text.splitlines()[0]
    assert "producer breakers: unknown (no PROMETHEUS_MULTIPROC_DIR)" in text


@pytest.fixture
def producers(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[str]]]]:
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(Path.cwd())}

    def start(state: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(state)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    dead = start(1)
    dead.communicate("")  # exited with its breaker open: its file stays, it must not count
    procs = [start(1), start(0)]
    try:
        yield metrics_dir, procs
    finally:
        for proc in procs:
            proc.communicate("")


def test_producers_breakers_come_from_their_metrics(
    app: Celery,
    producers: tuple[Path, list[subprocess.Popen[str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics_dir, (tripped, _healthy) = producers
    found = producer_breakers(str(metrics_dir))
    assert found is not None
    assert found["processes"] == [
        {"pid": p.pid, "open": p is tripped} for p in sorted(producers[1], key=lambda p: p.pid)
    ]
    assert (found["open"], found["closed"]) == (1, 1)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    spill = json.loads(status(app, "--json"))["spill"]
    assert spill["producer_breakers"]["open"] == 1
    assert f"producer breakers: 1 open, 1 closed (open: pid {tripped.pid})" in status(app)
