"""The ``durable_*`` Celery settings (``app.conf``), declared once.

Read them with :func:`settings_for`: one typed, frozen :class:`DurableSettings`
per app, validated once (a call site that says ``settings.restore_backoff``
cannot misspell a key the way ``conf["durable_..."]`` can).  Validation raises
:class:`~celery_durable.exceptions.ConfigError` naming the valid settings when a
``durable_*`` key is unknown or has the wrong type.  :func:`durable_settings`
(a plain dict keyed by setting name) stays for existing callers.

To add a setting: an :class:`Option` in :data:`SETTINGS` (it feeds validation and
the reference table in ``docs/src/configuration.md``) and a field of the same
name without the ``durable_`` prefix in :class:`DurableSettings`;
``tests/unit/test_options.py`` checks that the two agree.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, fields
from typing import Any

from .options import Option, validate

__all__ = ["SETTINGS", "DurableSettings", "durable_settings", "settings_for"]

SETTINGS: tuple[Option, ...] = (
    # Dead-letter capture (DESIGN.md section 2)
    Option(
        "durable_dlq_all_tasks",
        bool,
        False,
        "Dump every task on its final failure, not only @dead_letter ones.",
    ),
    Option(
        "durable_dlq_url",
        str,
        "",
        "Dump store URL: file:///path or redis://host:port/db. "
        "Empty means file://$CELERY_DURABLE_DIR/dlq.",
    ),
    Option(
        "durable_dlq_capacity_bytes",
        int,
        1 << 20,
        "Write the dumps logged since the last flush to the store once they hold this many bytes.",
        min=1,
    ),
    Option(
        "durable_dlq_flush_interval",
        float,
        1.0,
        "Write logged dumps to the store this many seconds after the first one.",
        min=0.0,
    ),
    Option(
        "durable_dlq_version", int, 1, "Dump format version written in every segment header.", min=1
    ),
    Option("durable_dlq_serializer", str, "json", "Kombu serializer used to encode dumps."),
    Option(
        "durable_dlq_wal_max_bytes",
        int,
        1 << 30,
        "Bound of each process's dump write-ahead log (dumps the dump store has not "
        "taken yet); beyond it a dump is logged as a DROPPED DUMP line.",
        min=1,
    ),
    # Retention of the dump store (DESIGN.md section 2; docs/src/dead-letters.md)
    Option(
        "durable_dlq_max_bytes",
        int,
        1 << 30,
        "Most bytes the dump store keeps (parked dumps included; None: unbounded).",
        min=1,
        nullable=True,
    ),
    Option(
        "durable_dlq_max_entries",
        int,
        100_000,
        "Most dumps the dump store keeps (parked dumps included; None: unbounded).",
        min=1,
        nullable=True,
    ),
    Option(
        "durable_dlq_max_age",
        float,
        180 * 86400.0,
        "Dumps older than this many seconds are expired (None: never).",
        min=0.0,
        nullable=True,
    ),
    Option(
        "durable_dlq_when_full",
        str,
        "drop_oldest",
        "Which dumps go when a max_bytes/max_entries bound is exceeded.",
        choices=("drop_oldest", "drop_newest"),
    ),
    # Restore (DESIGN.md section 3)
    Option(
        "durable_restore_allow_rate",
        float,
        0.8,
        "Feed a queue only while length < allow_rate * queue_capacity.",
        min=0.0,
    ),
    Option(
        "durable_restore_queue_capacity",
        int,
        10000,
        "Nominal capacity of a target queue, in messages.",
        min=1,
    ),
    Option(
        "durable_restore_postpone_interval",
        float,
        30.0,
        "Seconds to postpone a queue that is above the allow rate.",
        min=0.0,
    ),
    Option(
        "durable_restore_batch",
        int,
        1000,
        "Most dumps restored by one run of celery_durable.restore.",
        min=1,
    ),
    Option(
        "durable_restore_rate",
        float,
        None,
        "Most messages per second a restore run publishes (None: unlimited).",
        min=0.0,
        nullable=True,
    ),
    Option(
        "durable_restore_backoff",
        float,
        60.0,
        "A task restored n times is eligible again after backoff * 2**n seconds.",
        min=0.0,
    ),
    Option(
        "durable_restore_max_attempts",
        int,
        5,
        "Restores before an entry is parked (kept, never restored automatically).",
        min=0,
    ),
    # Metrics (DESIGN.md section 5)
    Option(
        "durable_metrics_port",
        int,
        None,
        "Start a Prometheus exporter on this port in the worker (None: off).",
        min=0,
        nullable=True,
    ),
)


PREFIX = "durable_"


@dataclass(frozen=True)
class DurableSettings:
    """An app's validated ``durable_*`` settings; each field is a setting minus ``durable_``."""

    dlq_all_tasks: bool
    dlq_url: str
    dlq_capacity_bytes: int
    dlq_flush_interval: float
    dlq_version: int
    dlq_serializer: str
    dlq_wal_max_bytes: int
    dlq_max_bytes: int | None
    dlq_max_entries: int | None
    dlq_max_age: float | None
    dlq_when_full: str
    restore_allow_rate: float
    restore_queue_capacity: int
    restore_postpone_interval: float
    restore_batch: int
    restore_rate: float | None
    restore_backoff: float
    restore_max_attempts: int
    metrics_port: int | None

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> DurableSettings:
        """From :func:`~celery_durable.options.validate`'s output (every setting present)."""
        return cls(**{f.name: values[PREFIX + f.name] for f in fields(cls)})

    @classmethod
    def from_conf(cls, conf: Any) -> DurableSettings:
        """Validate a Celery ``app.conf`` (or any mapping of settings)."""
        return cls.from_values(validate(_given(conf), SETTINGS, "Celery setting"))


def _given(conf: Any) -> dict[str, Any]:
    return {k: conf[k] for k in list(conf.keys()) if k.startswith(PREFIX)}


# app -> (the durable_* keys it was built from, the settings).  Keyed weakly so a
# discarded app is not kept alive; rebuilt only when a durable_* value changes
# (tests and apps may still set app.conf after the first read).
_CACHE: weakref.WeakKeyDictionary[Any, tuple[dict[str, Any], DurableSettings]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_LOCK = threading.Lock()


def settings_for(app: Any) -> DurableSettings:
    """The app's :class:`DurableSettings`, validated once per distinct configuration."""
    given = _given(app.conf)
    with _CACHE_LOCK:
        cached = _CACHE.get(app)
    if cached is not None and cached[0] == given:
        return cached[1]
    settings = DurableSettings.from_values(validate(given, SETTINGS, "Celery setting"))
    with _CACHE_LOCK:
        _CACHE[app] = (given, settings)
    return settings


def durable_settings(conf: Any) -> dict[str, Any]:
    """Validated ``durable_*`` settings from a Celery ``app.conf`` (defaults filled in).

    The dict form, keyed by full setting name; new code uses :func:`settings_for`.
    """
    return validate(_given(conf), SETTINGS, "Celery setting")
