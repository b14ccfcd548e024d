"""``celery durable status`` shows what retention dropped (never silent)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from celery import Celery
from click.testing import CliRunner

from celery_durable.cli import durable
from celery_durable.dlq import open_store
from celery_durable.dlq.retention import Retention, enforce
from tests.integration.dlq_writer import entry


def test_status_reports_dropped_dumps_per_reason(tmp_path: Path) -> None:
    app = Celery("status", broker="memory://")
    app.conf.durable_dlq_url = (tmp_path / "dlq").as_uri()
    store = open_store(app.conf.durable_dlq_url)
    store.write([entry(f"t{i}", 10) for i in range(5)])
    enforce(store, Retention(max_entries=2))
    obj = SimpleNamespace(app=app)
    result = CliRunner().invoke(durable, ["status", "--json"], obj=obj)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dlq"]["dumps"] == 2
    assert report["dlq"]["dropped"] == {"max_age": 0, "max_entries": 3, "max_bytes": 0}
    text = CliRunner().invoke(durable, ["status"], obj=obj).output
    assert "dropped by retention: max_age 0, max_entries 3, max_bytes 0" in text


def test_the_apps_store_carries_the_retention_settings(tmp_path: Path) -> None:
    from celery_durable.dlq import store_for_app

    app = Celery("retention", broker="memory://")
    app.conf.durable_dlq_url = (tmp_path / "dlq").as_uri()
    app.conf.durable_dlq_max_entries = 7
    app.conf.durable_dlq_max_age = None
    app.conf.durable_dlq_when_full = "drop_newest"
    store = store_for_app(app)
    assert store.retention == Retention(  # type: ignore[attr-defined]
        max_bytes=1 << 30, max_entries=7, max_age=None, when_full="drop_newest"
    )
    default = Celery("defaults", broker="memory://")
    default.conf.durable_dlq_url = app.conf.durable_dlq_url
    assert store_for_app(default).retention == Retention(  # type: ignore[attr-defined]
        max_bytes=1 << 30, max_entries=100_000, max_age=180 * 86400.0, when_full="drop_oldest"
    )
