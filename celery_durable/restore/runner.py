"""One restore run: pick due dumps oldest first, republish them, then delete them.

The run has two phases.  *Plan*: walk the store oldest first, skip parked and
not-yet-due entries, ask the :class:`~.gate.QueueGate` whether each target
queue may take one more, and stop at ``durable_restore_batch``.  *Publish*: send
the plan in chunks through a Kombu Producer, one redis pipeline per chunk
(``pipeline.py``; other transports go through ``Producer.batch()``),
and delete a chunk's dumps only after the broker accepted the whole chunk.

So a crash (SIGKILL) between publish and delete replays at most one chunk
(:data:`CHUNK` messages): delivery is at least once, with the original task id
so consumers can deduplicate.  Nothing is ever deleted before it was published.

A dump that cannot be planned (a field of the wrong type, see
:mod:`celery_durable.dlq.validate`, or a message that cannot be built or
serialized) is *quarantined*: skipped with its reason, logged and counted once
per process in ``celery_durable_corrupt_records{store="dlq"}``, kept in the
store and listed by ``dlq ls``/``status``.  It never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, NamedTuple

from kombu.exceptions import ChannelError, EncodeError
from kombu.serialization import dumps as serialize

from .. import metrics
from ..dlq.base import DumpEntry, DumpStore
from ..dlq.validate import entry_problem
from ..exceptions import DurableError, RestoreError
from ..settings import settings_for
from .envelope import Envelopes
from .gate import QueueGate
from .lock import RunLock, run_lock
from .message import Republish, build_message
from .pipeline import pipeline_publisher, publish_batch, push_lists
from .policy import is_due, is_parked

__all__ = ["CHUNK", "RestoreOptions", "RestoreReport", "restore"]

logger = logging.getLogger(__name__)

#: Messages per pipelined publish + delete: the most a crash can duplicate.
CHUNK = 250

# Entry ids already counted in metrics.PARKED by this process.  Best effort: a
# restarted process, another pool child or another host counts an entry again, so
# read the counter as "parkings seen", and `dlq ls --parked` for the truth.
_SEEN_PARKED: set[str] = set()
_SEEN_PARKED_MAX = 100_000
# Entry ids already counted in metrics.CORRUPT_RECORDS{store="dlq"} (same caveat).
_SEEN_QUARANTINED: set[str] = set()


@dataclass
class RestoreOptions:
    """What a run may do; :meth:`from_app` reads the ``durable_restore_*`` settings."""

    batch: int | None = 1000
    rate: float | None = None
    backoff: float = 60.0
    max_attempts: int = 5
    allow_rate: float = 0.8
    capacity: int = 10000
    postpone_interval: float = 30.0
    #: ``dlq restore``: restore now, whatever the backoff says.
    ignore_backoff: bool = False
    #: ``dlq restore``: parked entries too (an operator's explicit decision).
    include_parked: bool = False
    #: ``dlq restore --force``: no rate control.
    force: bool = False
    #: What started the run, recorded in each message's restore history:
    #: ``beat`` (the schedule), ``cli`` (``dlq restore``) or ``console``.
    trigger: str = "beat"

    @classmethod
    def from_app(cls, app: Any, **overrides: Any) -> RestoreOptions:
        s = settings_for(app)
        opts = cls(
            batch=s.restore_batch,
            rate=s.restore_rate,
            backoff=s.restore_backoff,
            max_attempts=s.restore_max_attempts,
            allow_rate=s.restore_allow_rate,
            capacity=s.restore_queue_capacity,
            postpone_interval=s.restore_postpone_interval,
        )
        for key, value in overrides.items():
            setattr(opts, key, value)
        return opts


@dataclass
class RestoreReport:
    """What a run did (returned by the task, printed by the CLI)."""

    restored: int = 0
    by_queue: Counter[str] = field(default_factory=Counter)
    #: Entries left because their queue was above the allow rate, per queue.
    postponed: Counter[str] = field(default_factory=Counter)
    not_due: int = 0
    parked: int = 0
    #: Malformed dumps skipped (kept in the store): ``(entry_id, task_id, reason)``.
    quarantined: list[tuple[str, str, str]] = field(default_factory=list)
    errors: int = 0
    error: str = ""
    #: Age (s) of the oldest due dump still in the store after the run.
    lag: float = 0.0
    #: Another run held the store's lock; this one did nothing.
    busy: bool = False
    #: The messages a dry run would publish.
    planned: list[Republish] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "restored": self.restored,
            "by_queue": dict(self.by_queue),
            "postponed": dict(self.postponed),
            "not_due": self.not_due,
            "parked": self.parked,
            "quarantined": len(self.quarantined),
            "errors": self.errors,
            "error": self.error,
            "lag": round(self.lag, 3),
            "busy": self.busy,
        }


class _QueueLengths:
    """``queue -> length`` through a passive ``queue_declare`` on its own channel.

    A missing queue is empty (redis keeps no key for an empty list; amqp answers
    404 and closes the channel, so a fresh one is opened for the next probe).
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._channel: Any = None
        self._errors = (ChannelError, *tuple(getattr(connection, "channel_errors", ())))

    def __call__(self, queue: str) -> int:
        if self._channel is None:
            self._channel = self._connection.channel()
        try:
            return int(self._channel.queue_declare(queue=queue, passive=True).message_count)
        except self._errors:
            self.close()
            return 0

    def close(self) -> None:
        if self._channel is not None:
            try:
                self._channel.close()
            except Exception:  # a dead channel is fine to drop
                logger.debug("restore: closing probe channel failed", exc_info=True)
            self._channel = None


class Wired(NamedTuple):
    """A planned message already in the form redis stores (the pipelined path).

    Made while planning, so the dump and the dicts it was built from are freed at
    once: a big run keeps one string per message, not a dozen objects the
    garbage collector would walk again and again.
    """

    text: str
    lists: tuple[str, ...]
    entry_id: str
    queue: str
    failed_at: float


Planned = Republish | Wired
_new_tuple = tuple.__new__


def _note_parked(entry: DumpEntry) -> None:
    if entry.entry_id in _SEEN_PARKED:
        return
    if len(_SEEN_PARKED) >= _SEEN_PARKED_MAX:
        _SEEN_PARKED.clear()
    _SEEN_PARKED.add(entry.entry_id)
    metrics.PARKED.inc()
    logger.warning(
        "restore: task %s (%s) parked after %d restores",
        entry.task_id,
        entry.task_name,
        entry.restores,
    )


def _describe(exc: BaseException) -> str:
    """``Type: message`` (some libraries' reprs say less, e.g. ``network:ConnectionError``)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _quarantine(entry: DumpEntry, reason: str, report: RestoreReport) -> None:
    """Skip ``entry`` for good (until fixed by hand); count and log it once per process."""
    key = str(entry.entry_id)
    report.quarantined.append((key, repr(entry.task_id)[:80], reason))
    if key in _SEEN_QUARANTINED:
        return
    if len(_SEEN_QUARANTINED) >= _SEEN_PARKED_MAX:
        _SEEN_QUARANTINED.clear()
    _SEEN_QUARANTINED.add(key)
    metrics.CORRUPT_RECORDS.labels(store="dlq").inc()
    logger.error(
        "restore: dump %s (task %s) quarantined, not restored: %s",
        key,
        repr(entry.task_id)[:80],
        reason,
    )


def _plan(
    entries: Iterator[DumpEntry],
    app: Any,
    opts: RestoreOptions,
    gate: QueueGate,
    report: RestoreReport,
    select: Callable[[DumpEntry], bool] | None,
    now: float,
    lock: RunLock,
    wire: Envelopes | None = None,
) -> list[Planned]:
    plan: list[Planned] = []
    # Loop invariants hoisted: this loop runs once per dump in the store.
    check_parked, max_attempts = not opts.include_parked, opts.max_attempts
    check_due, backoff = not opts.ignore_backoff, opts.backoff
    limit = opts.batch
    for seen, entry in enumerate(entries, 1):
        if seen % 5000 == 0:
            lock.refresh()  # a long walk over a big store must not let the lock lapse
        problem = entry_problem(entry)
        if problem is not None:
            _quarantine(entry, problem, report)
            continue
        if select is not None and not select(entry):
            continue
        if check_parked and is_parked(entry, max_attempts):
            _note_parked(entry)
            report.parked += 1
            continue
        if check_due and not is_due(entry, backoff, now):
            report.not_due += 1
            continue
        if limit is not None and len(plan) >= limit:
            # The oldest due entry this run leaves behind: that is the lag.
            report.lag = max(report.lag, now - entry.failed_at)
            break
        try:
            message = build_message(entry, app, opts.trigger, now)
        except Exception as exc:  # well-typed but still not a message we can build
            _quarantine(entry, f"cannot build its message: {_describe(exc)}", report)
            continue
        if not gate.admit(message.queue):
            report.postponed[message.queue] += 1
            report.lag = max(report.lag, now - entry.failed_at)
            continue
        if wire is not None and wire.usable(message):
            try:
                text, lists = wire.encode(message)
            except Exception as exc:  # the body (or a header) is not JSON
                _quarantine(entry, f"cannot serialize its body with json: {_describe(exc)}", report)
                continue
            gate.added(message.queue)
            # tuple.__new__: a NamedTuple's own __new__ is a Python call per message
            plan.append(
                _new_tuple(Wired, (text, lists, entry.entry_id, message.queue, entry.failed_at))
            )
            continue
        gate.added(message.queue)
        plan.append(message)
    return plan


def _publish_chunk(
    producer: Any, chunk: Sequence[Republish], serializer: str, compression: Any
) -> None:
    """Publish ``chunk``; returns only once the broker accepted all of it."""
    with publish_batch(producer, max_size=4 * len(chunk) + 1):
        for m in chunk:
            producer.publish(
                m.body,
                exchange=m.exchange,
                routing_key=m.routing_key,
                headers=m.headers,
                serializer=serializer,
                compression=compression,
                retry=False,
                **m.properties,
            )


def _encodable(chunk: list[Planned], serializer: str, report: RestoreReport) -> list[Planned]:
    """``chunk`` without the messages ``serializer`` cannot encode (those are quarantined)."""
    keep: list[Planned] = []
    for m in chunk:
        if isinstance(m, Wired):  # encoded while planning
            keep.append(m)
            continue
        try:
            serialize(m.body, serializer=serializer)
        except Exception as exc:  # kombu raises EncodeError, serializers anything
            _quarantine(
                m.entry, f"cannot serialize its body with {serializer}: {_describe(exc)}", report
            )
            continue
        keep.append(m)
    return keep


def restore(
    app: Any,
    store: DumpStore,
    options: RestoreOptions | None = None,
    *,
    select: Callable[[DumpEntry], bool] | None = None,
    dry_run: bool = False,
    lock: RunLock | None = None,
    chunk_size: int = CHUNK,
) -> RestoreReport:
    """Run one restore over ``store``; see the module docstring.

    Raises :class:`RestoreError` when the broker refused a publish (the chunk in
    flight stays in the store and is retried next run) or a delete failed.
    """
    opts = options or RestoreOptions.from_app(app)
    report = RestoreReport()
    lock = lock or run_lock(store.url)
    if not lock.acquire():
        report.busy = True
        logger.info("restore: another run holds the lock for %s; skipping", store.url)
        return report
    try:
        # A connection of its own per run, not one from the producer pool: after a
        # broker outage a pooled connection can come back half-closed (Kombu then
        # fails in create_channel), and a run every beat tick can afford a connect.
        with app.connection_for_write() as connection:
            producer = connection.Producer()
            lengths = _QueueLengths(connection)
            wire = None
            if not dry_run and not app.conf.task_compression and pipeline_publisher(producer):
                wire = Envelopes.for_channel(producer.channel, app.conf.task_serializer)
            try:
                gate = QueueGate(
                    lengths,
                    allow_rate=opts.allow_rate,
                    capacity=opts.capacity,
                    postpone_interval=opts.postpone_interval,
                    enforce=not opts.force,
                    remember=not dry_run,
                )
                now = time.time()
                plan = _plan(store.entries(), app, opts, gate, report, select, now, lock, wire)
            finally:
                lengths.close()
            if dry_run:
                report.planned = [m for m in plan if isinstance(m, Republish)]
                return report
            with store.batched_deletes():
                _publish(app, producer, store, plan, opts, report, lock, chunk_size)
    except DurableError:
        raise
    except Exception as exc:  # the broker, while planning (queue lengths)
        metrics.RESTORE_ERRORS.inc()
        raise RestoreError(f"restore run failed: {_describe(exc)}") from exc
    finally:
        lock.release()
        if not dry_run:
            metrics.RESTORE_LAG.set(report.lag)
            _note_run(store, report)
    if report.error:
        raise RestoreError(report.error)
    return report


LAST_RUN_NOTE = "last-restore"


def _note_run(store: DumpStore, report: RestoreReport) -> None:
    """Leave what this run did in the store, for the console's overview."""
    put = getattr(store, "put_note", None)
    if put is None:
        return
    try:
        put(LAST_RUN_NOTE, {"at": time.time(), **report.as_dict()})
    except Exception:  # a note is nice to have; never fail a run for it
        logger.debug("restore: cannot note the run in %s", store.url, exc_info=True)


def _push_wired(channel: Any, part: Sequence[Wired]) -> None:
    lists: dict[str, list[str]] = {}
    for m in part:
        for name in m.lists:
            found = lists.get(name)
            if found is None:
                lists[name] = [m.text]
            else:
                found.append(m.text)
    push_lists(channel, lists, {})


def _publish(
    app: Any,
    producer: Any,
    store: DumpStore,
    plan: list[Planned],
    opts: RestoreOptions,
    report: RestoreReport,
    lock: RunLock,
    chunk_size: int,
) -> None:
    serializer = app.conf.task_serializer
    compression = app.conf.task_compression
    fast = pipeline_publisher(producer)
    if opts.rate:
        chunk_size = max(1, min(chunk_size, int(opts.rate / 10) or 1))
    started = time.monotonic()

    def send(chunk: list[Planned]) -> None:
        # In plan order: runs of pre-encoded messages go out as they are.
        for wired, run in groupby(chunk, key=lambda m: isinstance(m, Wired)):
            part: Sequence[Any] = list(run)
            if wired:
                _push_wired(producer.channel, part)
            elif fast is not None and fast.usable(part, compression):
                fast.publish(part, serializer)
            else:
                _publish_chunk(producer, part, serializer, compression)

    for start in range(0, len(plan), chunk_size):
        chunk = plan[start : start + chunk_size]
        if opts.rate:
            ahead = started + report.restored / opts.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        try:
            try:
                send(chunk)
            except EncodeError:
                # One body the task serializer cannot encode must not block the rest.
                # Kombu's generic path may have sent the messages before it: they go
                # again (at least once), nothing is deleted unsent.
                chunk = _encodable(chunk, serializer, report)
                if chunk:
                    send(chunk)
        except Exception as exc:
            report.errors += len(chunk)
            metrics.RESTORE_ERRORS.inc(len(chunk))
            report.error = f"publish failed after {report.restored} restored: {_describe(exc)}"
            report.lag = max(report.lag, time.time() - chunk[0].failed_at)
            logger.error("restore: %s", report.error)
            return
        if not chunk:
            continue
        try:
            store.delete([m.entry_id for m in chunk])
        except Exception as exc:
            # Published but not deleted: the next run publishes these again.
            report.errors += len(chunk)
            metrics.RESTORE_ERRORS.inc(len(chunk))
            report.error = (
                f"published {len(chunk)} dumps but could not delete them: {_describe(exc)}"
            )
            logger.error("restore: %s", report.error)
            return
        report.restored += len(chunk)
        per_queue = Counter(m.queue for m in chunk)
        for queue, n in per_queue.items():
            metrics.RESTORED.labels(queue=queue).inc(n)
        report.by_queue.update(per_queue)
        try:
            lock.refresh()
        except Exception as exc:
            # Expired (a publish stalled longer than its TTL): another run may own
            # the store now, so stop rather than publish the same dumps twice.
            report.error = (
                f"lost the restore lock after {report.restored} restored: {_describe(exc)}"
            )
            logger.error("restore: %s", report.error)
            return
