"""Every error celery-durable raises on purpose.

Exception hierarchy::

    DurableError                  base class: catch this to catch all of ours
     ├── SpillError               the local spill store (LevelDB) failed: disk error,
     │    │                       read-only or unwritable ``spill_dir``, closed store
     │    ├── SpillFull           the spill store reached ``spill_max_bytes``; the
     │    │                       message was *not* accepted (nothing else is lost)
     │    ├── StoreLocked         the store is open in a live process (this one or
     │    │                       another): LevelDB allows one process per store
     │    └── StoreDamaged        the store has unreadable data (a damaged table or
     │                            log, a missing ``CURRENT``): it is moved aside to
     │                            ``quarantine/``, never deleted
     ├── DumpError                a dead-letter dump could not be written or read
     ├── RestoreError             a dumped task could not be restored
     ├── ConfigError              an unknown option, a wrong type or a bad value in
     │                            ``broker_transport_options`` or a ``durable_*`` setting
     │                            (also a ``ValueError``), e.g. ``spill_dir`` naming a file
     ├── CorruptRecord            a stored record failed its checksum or could not be
     │                            decoded (readers count, quarantine and skip these;
     │                            it is raised only by the low-level decoders)
     └── VersionMismatch          a stored record or segment was written by another
                                  format version (quarantined, never deleted)
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptRecord",
    "DumpError",
    "DurableError",
    "RestoreError",
    "SpillError",
    "SpillFull",
    "StoreDamaged",
    "StoreLocked",
    "VersionMismatch",
]


class DurableError(Exception):
    """Base class of every celery-durable error."""


class SpillError(DurableError):
    """The local spill store failed (disk error, locked store, unreadable store)."""


class SpillFull(SpillError):
    """The spill store holds ``spill_max_bytes``: this message was not accepted."""


class StoreLocked(SpillError):
    """The store's LevelDB lock is held by a live process (possibly this one)."""


class StoreDamaged(SpillError):
    """The store has data LevelDB cannot read: it is quarantined, never deleted."""


class DumpError(DurableError):
    """A dead-letter dump could not be written or read."""


class RestoreError(DurableError):
    """A dumped task could not be restored."""


class ConfigError(DurableError, ValueError):
    """A transport option or ``durable_*`` setting is unknown, mistyped or out of range."""


class CorruptRecord(DurableError):
    """A stored record failed its CRC32 check or could not be decoded."""


class VersionMismatch(DurableError):
    """A stored record or segment carries a format version this code does not read."""
