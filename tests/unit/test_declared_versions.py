"""What pyproject.toml declares is what CI tests: every dependency floor is a pin of
the oldest tier (.ci/constraints-oldest.txt, run by .ci/run in .venv-oldest)."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest depends on tomli there
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _floors() -> dict[str, Version]:
    floors = {}
    for line in _pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        (lower,) = [s.version for s in req.specifier if s.operator == ">="]
        floors[req.name.lower()] = Version(lower)
    return floors


def _oldest_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "constraints-oldest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip().lower()] = Version(version)
    return pins


def test_every_dependency_floor_is_what_the_oldest_tier_installs() -> None:
    assert _floors() == _oldest_pins()
