"""README's main command: the broker-restart demo ends with 0 lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples" / "broker_restart_demo" / "demo.py"


def test_demo_survives_broker_restart_with_nothing_lost() -> None:
    proc = subprocess.run(
        [sys.executable, str(DEMO)],
        env={**os.environ, "DEMO_TASKS": "900"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "redis KILLED" in proc.stdout
    assert "sent 900 / executed 900 / lost 0" in proc.stdout, proc.stdout
