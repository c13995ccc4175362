"""What every executor shares (``executors``: serial and process pool; ``ray_executor``: Ray): the ``Executor`` base
with ``map``, ``submit`` and the per-worker memory report, the wrapper every task runs inside (``_run_task``: the
result or the failure as text, with the worker's peak memory), ``Pending`` for a submitted task, and ``TaskError``.
It imports no executor, so that each executor module can build on it without importing the others."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flipper_control.learning.worker_process import children_peak_rss_mib, default_workers, peak_rss_mib

__all__ = ["Executor", "Pending", "Progress", "TaskError"]

Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------------------------ task wrapper
class TaskError(RuntimeError):
    """A task failed; the message names its index and the original error."""

    def __init__(self, index: int, error_type: str, error_message: str, remote_traceback: str = ""):
        super().__init__(f"task {index} failed: {error_type}: {error_message}")
        self.index = index
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback

    def __reduce__(self):  # keep it picklable although __init__ takes more than one argument
        return (TaskError, (self.index, self.error_type, self.error_message, self.remote_traceback))


class _RemoteTraceback(Exception):
    """Carries the worker's traceback text as the ``__cause__`` of a re-raised task exception."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass
class _Failure:
    """What a worker sends back instead of a result: strings always pickle, the exception itself maybe not."""

    error_type: str
    message: str
    traceback: str
    exception: BaseException | None


@dataclass
class _Outcome:
    ok: bool
    value: Any  # the task's result, or a _Failure
    pid: int
    peak_rss_mib: float


def _run_task(fn: Callable[[Any], Any], task: Any) -> _Outcome:
    """Runs one task in a worker (or in this process for ``serial``); never raises for an error inside ``fn``."""
    try:
        value, ok = fn(task), True
    except Exception as exc:  # any task error must reach the caller with its index
        exc_to_send: BaseException | None = exc
        try:
            import pickle

            # safe: a round trip of our own in-memory exception, never bytes from a file or the network;
            # both ways because a custom __init__ may pickle but fail to unpickle
            pickle.loads(pickle.dumps(exc))  # safe: our own in-memory object (see above)
        except Exception:  # such an exception travels as text only
            exc_to_send = None
        value = _Failure(type(exc).__name__, str(exc), traceback.format_exc(), exc_to_send)
        ok = False
    return _Outcome(ok, value, os.getpid(), peak_rss_mib())


def _task_error(index: int, failure: _Failure) -> TaskError:
    err = TaskError(index, failure.error_type, failure.message, failure.traceback)
    if failure.exception is not None:
        if failure.exception.__cause__ is None:  # keep a chain the task made itself (serial); pickling drops it
            failure.exception.__cause__ = _RemoteTraceback(failure.traceback)
        err.__cause__ = failure.exception
    return err


def _infrastructure_error(index: int, exc: BaseException) -> TaskError:
    """A failure outside the task function (pickling, a dead worker, Ray): wrap it with the index."""
    err = TaskError(index, type(exc).__name__, str(exc).strip() or repr(exc), "")
    err.__cause__ = exc
    return err


# ------------------------------------------------------------------------------------------ executors
class Pending:
    """One task started by ``Executor.submit``. ``result()`` waits for it and returns its value, or raises the
    ``TaskError`` that ``map`` would (index 0); later calls give the same value or error without waiting."""

    def __init__(self, executor: Executor, wait_outcome: Callable[[], _Outcome]):
        self._executor, self._wait_outcome = executor, wait_outcome
        self._settled = False
        self._value: Any = None
        self._error: TaskError | None = None

    def result(self) -> Any:
        if not self._settled:
            try:
                outcome = self._wait_outcome()
                self._executor._record_peak(outcome)
                if outcome.ok:
                    self._value = outcome.value
                else:
                    self._error = _task_error(0, outcome.value)
            except TaskError as exc:  # infrastructure failures arrive already wrapped
                self._error = exc
            self._settled = True
        if self._error is not None:
            raise self._error
        return self._value


class Executor:
    """Base of the executors: ``map``, ``close``, context manager, per-worker peak memory.

    Subclasses implement ``_map_outcomes``; the base unpacks results in task order, records worker peaks
    and turns a failed task into ``TaskError``.
    """

    kind = "base"

    def __init__(self, workers: int | None = None):
        self.workers = int(workers) if workers is not None else default_workers()
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.worker_peak_rss: dict[int, float] = {}  # worker pid -> largest peak RSS (MiB) reported by its tasks

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any], progress: Progress | None = None) -> list:
        """``[fn(t) for t in tasks]``, run by this executor; results in task order.

        ``fn`` must be a top-level function of an importable module (it is pickled by reference) taking one
        argument. ``progress(done, total)`` is called in this process after every finished task. The first
        failure cancels tasks not yet started and raises ``TaskError`` (see module docstring).
        """
        tasks = list(tasks)
        if not tasks:
            return []
        results: list[Any] = [None] * len(tasks)
        done = 0

        def collect(index: int, outcome: _Outcome) -> None:
            nonlocal done
            self._record_peak(outcome)
            if not outcome.ok:
                raise _task_error(index, outcome.value)
            results[index] = outcome.value
            done += 1
            if progress is not None:
                progress(done, len(tasks))

        self._map_outcomes(fn, tasks, collect)
        return results

    def submit(self, fn: Callable[[Any], Any], task: Any) -> Pending:
        """Start ``fn(task)`` and return a ``Pending`` at once (``serial`` runs it first). The task holds one worker
        until it ends; ``map`` calls meanwhile share the others. ``close()`` ends it like any running task."""
        return Pending(self, self._submit_outcome(fn, task))

    def _map_outcomes(self, fn, tasks: list, collect: Callable[[int, _Outcome], None]) -> None:
        raise NotImplementedError

    def _submit_outcome(self, fn, task) -> Callable[[], _Outcome]:
        raise NotImplementedError

    def _record_peak(self, outcome: _Outcome) -> None:
        self.worker_peak_rss[outcome.pid] = max(self.worker_peak_rss.get(outcome.pid, 0.0), outcome.peak_rss_mib)

    def memory_report(self) -> dict:
        """Peaks in MiB: this process, terminated children, and each worker process seen so far (by pid)."""
        workers = {str(pid): round(mib, 1) for pid, mib in sorted(self.worker_peak_rss.items())}
        return {
            "parent_peak_rss_mib": round(peak_rss_mib(), 1),
            "children_peak_rss_mib": round(children_peak_rss_mib(), 1),
            "worker_peak_rss_mib": workers,
            "max_worker_peak_rss_mib": round(max(self.worker_peak_rss.values(), default=0.0), 1),
        }

    def close(self) -> None:
        """Release workers; safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"
