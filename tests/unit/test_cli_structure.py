"""The ``celery durable`` command tree follows Celery's CLI conventions, names unchanged."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from celery.bin.base import CeleryCommand, CeleryOption
from click.testing import CliRunner

from celery_durable.cli import durable
from celery_durable.cli.base import DurableGroup

ROOT = Path(__file__).resolve().parents[2]


def walk(group: click.Group, path: str = "durable") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield f"{path} {name}", command
        if isinstance(command, click.Group):
            yield from walk(command, f"{path} {name}")


def test_command_names_are_the_design_ones() -> None:
    assert [path for path, _ in walk(durable)] == [
        "durable dlq",
        "durable dlq export",
        "durable dlq import",
        "durable dlq ls",
        "durable dlq purge",
        "durable dlq restore",
        "durable dlq show",
        "durable dlq unpark",
        "durable spill",
        "durable spill check",
        "durable spill drain",
        "durable spill ls",
        "durable status",
        "durable web",
    ]


def test_commands_are_celery_commands_in_durable_groups() -> None:
    assert isinstance(durable, DurableGroup)
    for path, command in walk(durable):
        if isinstance(command, click.Group):
            assert isinstance(command, DurableGroup), path
        else:
            assert isinstance(command, CeleryCommand), path
        if path.startswith(("durable dlq", "durable status")):
            for param in command.params:
                if isinstance(param, click.Option):
                    assert isinstance(param, CeleryOption), f"{path} {param.opts}"


def test_help_groups_options_like_celery() -> None:
    out = CliRunner().invoke(durable, ["dlq", "ls", "--help"]).output
    assert "Selection Options:" in out and "Store Options:" in out


def test_user_preload_options_reach_the_app(tmp_path: Path) -> None:
    """A preload option the app declares is accepted and delivered (``handle_preload_options``)."""
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.unit.cli_preload_app", "durable",
         "--tenant", "blue", "dlq", "ls"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DLQ_URL": (tmp_path / "dlq").as_uri(),
             "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "preload tenant=blue" in proc.stdout
    assert "0 dumps, 0 parked, 0 quarantined" in proc.stdout
