"""Run independent tasks (plan one world, evaluate one policy on one world) serially, on a local process pool or on Ray.

``make_executor(kind, workers, ray_address)`` returns an ``Executor`` whose ``map(fn, tasks, progress)``
calls the top-level (picklable) function ``fn`` once per task and returns the results **in task order**,
whatever order they finish in. ``submit(fn, task)`` starts one task and returns at once (``serial``: runs it
then); its ``Pending.result()`` waits for it. A submitted task holds one worker while later ``map`` calls run
on the others: the loop trains the CycleGAN that way beside the next steps, which do not need it. Kinds:

- ``serial``: in this process, one task after the other (debugging, tiny jobs, the reference);
- ``process``: a local pool of ``spawn``-started worker processes, kept for the executor's lifetime;
- ``ray``: Ray tasks on a local instance started on first use (``num_cpus=workers``), or on an existing
  cluster when ``ray_address`` is given.

Determinism: an executor only decides *where* a task runs, never what it computes. Every task must carry
its own seeds (world seed, noise seed, torch/numpy seeds) and must not rely on global random state, the
worker it lands on or the order of execution; then all kinds return identical results. Workers run torch
with one intra-op thread (as ``serial`` does during ``map``), so thread counts cannot change reductions.

Where the operating system comes in (thread limits, memory readings, how pool workers start and stop) is in
``worker_process``; the Ray executor is in ``ray_executor``, joining a Ray cluster with clear errors in ``ray_connect``.

Failures: an exception raised by a task cancels the tasks not yet started and reaches the caller as a
``TaskError`` whose message names the task index and the original error (type and message); the worker's
traceback is in ``TaskError.remote_traceback``. Infrastructure failures (a task that cannot be pickled, a
worker killed by the OOM killer) are reported the same way.

Stopping: ``close()`` never waits for a running task. The process pool cancels what has not started, gives idle
workers a moment to exit and terminates the rest, so Ctrl-C or SIGTERM (which the ``flipper`` command turns into an
exception) ends a run within a couple of seconds. Pool workers ignore SIGINT (the parent decides; a Ctrl-C reaches
the whole process group) and exit by themselves when the parent process dies, even by SIGKILL: a watchdog thread
waits on the parent's lifeline pipe, and on Linux the kernel also sends them SIGKILL (``PR_SET_PDEATHSIG``). The
multiprocessing resource tracker then exits too, once the last worker holding its pipe is gone.

Memory: every task runs inside a wrapper that reads its worker's peak resident set (``peak_rss_mib``) after
the task and sends it back with the result, so tasks need not do anything. The executor keeps the largest
value per worker process; ``memory_report()`` gives those, this process's peak and the peak of terminated
children (``children_peak_rss_mib``) for the loop's report.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from flipper_control.learning.worker_process import (
    children_peak_rss_mib,
    default_workers,
    peak_rss_mib,
    pool_worker_init,
    stop_pool,
    worker_start_guard,
)

__all__ = ["EXECUTOR_KINDS", "Executor", "Pending", "ProcessExecutor", "SerialExecutor", "TaskError", "make_executor"]

EXECUTOR_KINDS = ("serial", "process", "ray")


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


class SerialExecutor(Executor):
    """Runs every task in this process, in order; the reference the parallel kinds must match."""

    kind = "serial"

    def __init__(self, workers: int | None = None):
        super().__init__(1)

    def _map_outcomes(self, fn, tasks, collect) -> None:
        import torch

        # the same single intra-op thread as the workers, so that no result depends on the kind
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for i, task in enumerate(tasks):
                collect(i, _run_task(fn, task))
        finally:
            torch.set_num_threads(threads)

    def _submit_outcome(self, fn, task) -> Callable[[], _Outcome]:
        outcomes: list[_Outcome] = []
        self._map_outcomes(fn, [task], lambda _, outcome: outcomes.append(outcome))
        return lambda: outcomes[0]


class ProcessExecutor(Executor):
    """A local pool of worker processes, created on the first ``map`` and reused until ``close()``.

    ``close()`` (also on Ctrl-C or SIGTERM in a ``with`` block or ``finally``) returns within about two seconds:
    tasks that have not started are cancelled and busy workers are terminated (see ``_stop_pool``).
    """

    kind = "process"

    def __init__(self, workers: int | None = None):
        super().__init__(workers)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_dies_with_main = False  # its workers get PR_SET_PDEATHSIG (started by the main thread)

    def _get_pool(self) -> ProcessPoolExecutor:
        # the pool starts its workers in the thread that calls submit(); PDEATHSIG ties a worker to that thread, so
        # it is only asked for from the main thread, and a pool that asked for it is not grown from another thread
        in_main = threading.current_thread() is threading.main_thread()
        if self._pool is not None and self._pool_dies_with_main and not in_main:
            self._discard_pool()
        if self._pool is None:
            import multiprocessing

            # 'spawn', not 'fork': the parent has torch, MuJoCo and OpenMP loaded, possibly with their thread
            # pools running; a forked child inherits locks held by those threads and can deadlock on the first
            # parallel op (and 'fork' is unsafe on macOS). 'forkserver' would also do, but 'spawn' is available
            # everywhere and its start-up cost (~1 s per worker, once per executor) is small beside a task.
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=pool_worker_init,
                                             initargs=(os.getpid(), in_main))
            self._pool_dies_with_main = in_main
        return self._pool

    def _map_outcomes(self, fn, tasks, collect) -> None:
        pool = self._get_pool()
        with worker_start_guard():  # submit() starts the workers (see worker_start_guard)
            futures: dict[Future, int] = {pool.submit(_run_task, fn, task): i for i, task in enumerate(tasks)}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=futures.__getitem__):
                    index = futures[fut]
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool as exc:
                        self._discard_pool()  # a dead worker breaks the whole pool: the next map starts a new one
                        raise _infrastructure_error(index, exc) from exc
                    except Exception as exc:  # e.g. fn or a task that cannot be pickled
                        raise _infrastructure_error(index, exc) from exc
                    collect(index, outcome)
        finally:
            for fut in pending:  # after a failure (or Ctrl-C): drop what has not started
                fut.cancel()

    def _submit_outcome(self, fn, task) -> Callable[[], _Outcome]:
        pool = self._get_pool()
        with worker_start_guard():
            fut = pool.submit(_run_task, fn, task)

        def wait_outcome() -> _Outcome:
            try:
                return fut.result()
            except BrokenProcessPool as exc:
                self._discard_pool()
                raise _infrastructure_error(0, exc) from exc
            except Exception as exc:  # fn or task cannot be pickled, or the pool was closed under it
                raise _infrastructure_error(0, exc) from exc

        return wait_outcome

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            stop_pool(pool, grace_s=0.0)

    def close(self) -> None:
        """Stop the workers: cancel tasks not started, terminate busy workers after a 1 s grace; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            stop_pool(pool)


def make_executor(kind: str = "process", workers: int | None = None, ray_address: str | None = None) -> Executor:
    """An executor of ``kind`` (``serial``, ``process`` or ``ray``) with ``workers`` workers (default: the CPUs this
    process may use). ``ray_address`` (ray only) joins an existing cluster instead of starting a local instance."""
    if kind == "serial":
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "ray":
        from flipper_control.learning.ray_executor import RayExecutor  # imports nothing of Ray until it connects

        return RayExecutor(workers, ray_address)
    raise ValueError(f"unknown executor kind {kind!r}; choose one of: {', '.join(EXECUTOR_KINDS)}")
