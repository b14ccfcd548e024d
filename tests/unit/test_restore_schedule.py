from __future__ import annotations

import pytest
from celery import Celery

from celery_durable import enable_restore_schedule
from celery_durable.exceptions import ConfigError
from celery_durable.restore.control import COMMAND


def test_adds_beat_entry_and_registers_task() -> None:
    app = Celery("sched", broker="memory://", set_as_current=False)
    assert enable_restore_schedule(app, every=5.0) == "celery-durable-restore"
    entry = app.conf.beat_schedule["celery-durable-restore"]
    assert entry["task"] == "celery_durable.restore"
    assert entry["schedule"] == 5.0
    assert entry["options"]["expires"] == 5.0
    app.finalize()
    assert "celery_durable.restore" in app.tasks


def test_control_command_registered() -> None:
    from celery.worker.control import Panel

    assert COMMAND in Panel.data


def test_rejects_bad_interval() -> None:
    with pytest.raises(ConfigError):
        enable_restore_schedule(Celery("x", set_as_current=False), every=0)
