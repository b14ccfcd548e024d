"""Declared options: one table per place a user configures us, validated loudly.

Kombu and Celery accept any key silently; we do not.  Each option is declared
once with its type, default and meaning, and the same table feeds validation,
the CLI's ``status`` output and the configuration reference in ``docs/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

__all__ = ["Option", "default_dir", "validate"]


def default_dir() -> Path:
    """``$CELERY_DURABLE_DIR``, or ``~/.local/state/celery-durable``."""
    env = os.environ.get("CELERY_DURABLE_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.local/state/celery-durable").expanduser()


@dataclass(frozen=True)
class Option:
    """One configurable value: name, accepted type, default and a one-line meaning."""

    name: str
    type: type | tuple[type, ...]
    default: Any
    doc: str
    choices: Sequence[Any] | None = None
    min: float | None = None
    nullable: bool = False

    def check(self, value: Any, where: str) -> Any:
        """Return ``value`` coerced to this option's type, or raise :class:`ConfigError`."""
        if value is None and self.nullable:
            return None
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        # ints are fine where floats are expected; bools are not numbers here.
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(self._bad(value, where))
        if not isinstance(value, types):
            raise ConfigError(self._bad(value, where))
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"{where} {self.name}={value!r}: must be one of "
                + ", ".join(repr(c) for c in self.choices)
            )
        number: Any = value
        if self.min is not None and number < self.min:
            raise ConfigError(f"{where} {self.name}={value!r}: must be >= {self.min}")
        return value

    def _bad(self, value: Any, where: str) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        expected = " or ".join(t.__name__ for t in types)
        return f"{where} {self.name}={value!r}: expected {expected}, got {type(value).__name__}"


def validate(
    given: Mapping[str, Any],
    options: Sequence[Option],
    where: str,
    *,
    ignore: Sequence[str] = (),
) -> dict[str, Any]:
    """Check ``given`` against ``options``; return every option's value (defaults filled in).

    Keys in ``ignore`` belong to someone else (for instance the inner Kombu
    transport's own options) and pass through untouched and unreturned.
    """
    known = {opt.name: opt for opt in options}
    unknown = sorted(k for k in given if k not in known and k not in ignore)
    if unknown:
        raise ConfigError(
            f"unknown {where} option(s) {', '.join(unknown)}; valid names: "
            + ", ".join(sorted(known))
        )
    return {
        name: opt.check(given[name], where) if name in given else opt.default
        for name, opt in known.items()
    }
