"""``@dead_letter`` and the ``task_failure`` handler that dumps final failures.

Importing this module connects the handlers (``task_failure``, and the shutdown
signals that force a final flush); :func:`dead_letter` and
:func:`celery_durable.dlq.install` import it, and a worker started through the
``celery`` command imports it at ``worker_init`` when ``durable_dlq_all_tasks``
is set (see :mod:`celery_durable.worker`).

Which tasks: those marked with :func:`dead_letter` (above or below ``@app.task``,
the mark is found on the task or on its function) and, with
``durable_dlq_all_tasks = True``, every task.

Which failures: ``task_failure`` means the task will not run again: ``retry()``
and ``autoretry_for`` send ``task_retry`` instead, ``Ignore`` and revoked tasks
send neither.  Celery 5.7 does send ``task_failure`` for ``Reject(requeue=False)``
(issue #4222) and for a hard time limit whose message is then requeued
(``acks_late`` without ``acks_on_timeout``); neither is a final failure here, so
neither is dumped.  Eager calls (``apply()``, ``task_always_eager``) had no
message to restore and are not dumped either.

A hard time limit or a lost pool process is reported by the worker's *main*
process, from ``Request.on_timeout``/``Request.on_failure``, where
``task.request`` belongs to no task or to another one.  Celery's own hook for
this is the task's ``Request`` class (``Task.Request``): every captured task
gets one with :class:`DeadLetterRequest` mixed in, composed with the class the
task already had (a user's own subclass keeps working).  Its ``on_timeout`` and
``on_failure`` tell the handler which ``Request`` is failing, and the handler
copies that request's message
(:func:`~celery_durable.dlq.message.entry_from_request`); the same request is
never dumped twice (Celery 5.7 reports a hard time limit from both methods).
``@dead_letter`` sets the class on the task it marks; :func:`use_request_classes`
sets it on every captured task of an app at ``worker_init``, before the worker
builds its task strategies.

Crash safety: :class:`~celery_durable.dlq.dumpqueue.DumpQueue` appends the dump
to this process's write-ahead log before the handler returns.  The handler never
raises into the worker: any error is logged.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, overload

from celery import signals
from celery.app.task import Context, Task
from celery.exceptions import Ignore, Reject, Retry, Terminated
from celery.local import PromiseProxy
from kombu.utils.imports import symbol_by_name

from ..settings import durable_settings
from .dumpqueue import DumpQueue, log_dropped
from .message import entry_from_context, entry_from_request
from .stores import store_for_app

__all__ = [
    "DeadLetterRequest",
    "adopt_orphans",
    "dead_letter",
    "flush_all",
    "queue_for_app",
    "use_request_classes",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
MARK = "__durable_dead_letter__"
NOT_FINAL = (Reject, Ignore, Retry, Terminated)

#: Task names marked through a lazy ``app.task`` proxy, once it is evaluated.
_marked_names: dict[str, tuple[type[BaseException], ...]] = {}
# Keyed by the app itself (weakly): ids of dead apps get reused.
_queues: weakref.WeakKeyDictionary[Any, DumpQueue] = weakref.WeakKeyDictionary()
_queues_lock = threading.Lock()
_last: tuple[weakref.ref[Any], DumpQueue] | None = None


# -- the decorator --------------------------------------------------------------
@overload
def dead_letter(task: T) -> T: ...
@overload
def dead_letter(
    task: None = None, *, exclude: tuple[type[BaseException], ...] = ()
) -> Callable[[T], T]: ...


def dead_letter(task: Any = None, *, exclude: Any = ()) -> Any:
    """Dump this task on its final failure, unless the exception is one of ``exclude``.

    Works as ``@dead_letter`` or ``@dead_letter(exclude=(ValueError,))``, above or
    below ``@app.task`` / ``@shared_task`` (with ``@shared_task`` put it below).
    """
    excluded = tuple(exclude) if isinstance(exclude, (tuple, list)) else (exclude,)

    def mark(obj: Any) -> Any:
        if isinstance(obj, PromiseProxy):
            # `app.task` before the app is finalized: mark the task once it exists,
            # without forcing the app to finalize at import time.
            obj.__then__(_mark_evaluated, obj, excluded)
        else:
            setattr(obj, MARK, excluded)
            if isinstance(obj, Task):
                _marked_names[obj.name] = excluded
                use_request_class(obj)
        return obj

    if task is not None:
        return mark(task)
    return mark


def _mark_evaluated(proxy: PromiseProxy, excluded: tuple[type[BaseException], ...]) -> None:
    real = proxy._get_current_object()
    setattr(real, MARK, excluded)
    _marked_names[real.name] = excluded
    use_request_class(real)


def _marks(task: Any) -> tuple[type[BaseException], ...] | None:
    found = getattr(task, MARK, None)
    if found is None:
        found = getattr(getattr(task, "run", None), MARK, None)
    if found is None:
        found = _marked_names.get(getattr(task, "name", ""))
    return found


# -- the dump queue of this process ---------------------------------------------
def queue_for_app(app: Any) -> DumpQueue:
    """This process's dump queue for ``app`` (created on first use)."""
    last = _last
    if last is not None and last[0]() is app:
        return last[1]
    queue = _queues.get(app)
    if queue is None:
        with _queues_lock:
            queue = _queues.get(app)
            if queue is None:
                settings = durable_settings(app.conf)
                queue = DumpQueue(
                    lambda: store_for_app(app),
                    capacity_bytes=settings["durable_dlq_capacity_bytes"],
                    flush_interval=settings["durable_dlq_flush_interval"],
                    wal_max_bytes=settings["durable_dlq_wal_max_bytes"],
                )
                _queues[app] = queue
    _remember(app, queue)
    return queue


def _remember(app: Any, queue: DumpQueue) -> None:
    # The last app asked for, to skip the weak dictionary (its lookup is Python
    # code) on a failing task's path; weakly, like the dictionary.
    global _last
    _last = (weakref.ref(app), queue)


def flush_all(timeout: float = 10.0) -> None:
    """Final flush of every dump queue of this process (shutdown, exit)."""
    for queue in list(_queues.values()):
        try:
            queue.close(timeout=timeout)
        except Exception:
            logger.exception("dlq: final flush failed")


def adopt_orphans(app: Any) -> int:
    """Flush the dump logs that dead processes left for ``app``'s store (process start)."""
    return queue_for_app(app).adopt()


def _forget_after_fork() -> None:
    # The parent's log and thread stay the parent's; the child builds its own
    # log (and flusher thread) on first use.  The parent's objects are dropped,
    # never closed: their descriptors and locks belong to the parent.
    global _queues_lock, _last
    _queues.clear()
    _last = None
    _queues_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


# -- the signal handlers --------------------------------------------------------
_all_tasks_cache: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _all_tasks(app: Any) -> bool:
    found = _all_tasks_cache.get(app)
    if found is None:
        found = _all_tasks_cache[app] = bool(durable_settings(app.conf)["durable_dlq_all_tasks"])
    return found


# -- the worker's Request class --------------------------------------------------
_reporting = threading.local()
DUMPED = "_durable_dumped"


class DeadLetterRequest:
    """Mixed into a captured task's worker ``Request`` class (``Task.Request``).

    The worker's main process reports hard time limits and lost pool processes
    from these two methods; while they run, the ``task_failure`` handler on this
    thread knows which request (and so which message) failed.
    """

    id: str

    # try/finally rather than a context manager: a solo or thread pool calls
    # on_failure for every failed task, on the task's own path.
    def on_timeout(self, soft: bool, timeout: float) -> Any:
        previous = getattr(_reporting, "request", None)
        _reporting.request = self
        try:
            return super().on_timeout(soft, timeout)  # type: ignore[misc]
        finally:
            _reporting.request = previous

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        previous = getattr(_reporting, "request", None)
        _reporting.request = self
        try:
            return super().on_failure(  # type: ignore[misc]
                exc_info, send_failed_event=send_failed_event, return_ok=return_ok
            )
        finally:
            _reporting.request = previous


def _reported_request(task_id: str) -> Any:
    """The ``Request`` of ``task_id`` if its main-process failure handler is running."""
    request = getattr(_reporting, "request", None)
    if request is not None and request.id == task_id:
        return request
    return None


_composed: dict[type, type] = {}


def request_class_for(base: type) -> type:
    """``base`` with :class:`DeadLetterRequest` mixed in (one class per base)."""
    if issubclass(base, DeadLetterRequest):
        return base
    composed = _composed.get(base)
    if composed is None:
        composed = type(
            f"DeadLetter{base.__name__}", (DeadLetterRequest, base), {"__module__": __name__}
        )
        _composed[base] = composed
    return composed


def use_request_class(task: Any) -> None:
    """Give ``task`` a Request class that reports main-process failures to capture."""
    task.Request = request_class_for(symbol_by_name(task.Request))


def _captured(task: Any) -> bool:
    if _marks(task) is not None:
        return True
    # durable_dlq_all_tasks never covers our own tasks: a failing restore
    # run must not dump itself into the store it is restoring from.
    return _all_tasks(task.app) and not str(task.name).startswith("celery_durable.")


def use_request_classes(app: Any) -> int:
    """Set the Request class of every captured task of ``app``; return how many.

    Called at ``worker_init``: the worker builds its task strategies (which read
    ``task.Request``) after that, when its consumer starts.
    """
    count = 0
    for task in app.tasks.values():
        if _captured(task):
            use_request_class(task)
            count += 1
    return count


def _requeued_timeout(task: Any, exc: BaseException) -> bool:
    from celery.exceptions import TimeLimitExceeded

    return (
        isinstance(exc, TimeLimitExceeded)
        and bool(task.acks_late)
        and not bool(getattr(task, "acks_on_timeout", True))
    )


def _on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    try:
        _capture(sender, task_id, exception, args, kwargs, einfo)
    except Exception:
        logger.exception("dlq: could not capture the failure of task %s", task_id)


def _capture(
    task: Any, task_id: str | None, exc: BaseException | None, args: Any, kwargs: Any, einfo: Any
) -> None:
    if task is None or task_id is None or exc is None:
        return
    if isinstance(exc, NOT_FINAL):
        return
    excluded = _marks(task)
    if excluded is None:
        if not _captured(task):
            return
        excluded = ()
    if excluded and isinstance(exc, excluded):
        return
    request = _reported_request(task_id)
    if request is not None:
        if getattr(request, DUMPED, False) or _requeued_timeout(task, exc):
            return
        setattr(request, DUMPED, True)
        entry = entry_from_request(task, request, exc, einfo)
    else:
        ctx = task.request
        if getattr(ctx, "is_eager", False) or getattr(ctx, "id", None) != task_id:
            if getattr(ctx, "is_eager", False):
                return
            logger.warning("dlq: no request found for failed task %s; dump is partial", task_id)
            ctx = Context(id=task_id, task=task.name, args=args, kwargs=kwargs)
        entry = entry_from_context(task, ctx, task_id, exc, einfo, args, kwargs)
    try:
        queue_for_app(task.app).put(entry)
    except Exception as error:  # no store (bad URL): keep it in the log
        log_dropped(entry, f"cannot queue the dump: {error!r}")
        raise


def _on_shutdown(**_: Any) -> None:
    flush_all()


signals.task_failure.connect(_on_task_failure, weak=False, dispatch_uid="celery_durable.dlq")
signals.worker_process_shutdown.connect(
    _on_shutdown, weak=False, dispatch_uid="celery_durable.dlq.process_shutdown"
)
signals.worker_shutdown.connect(
    _on_shutdown, weak=False, dispatch_uid="celery_durable.dlq.shutdown"
)
atexit.register(flush_all)
