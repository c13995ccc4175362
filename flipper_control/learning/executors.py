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

What every kind shares (the base class, the task wrapper, ``Pending``, ``TaskError``) is in ``executor_base``.
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
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from flipper_control.learning.executor_base import (  # Executor, Pending, TaskError: re-exported for callers
    Executor,
    Pending,
    TaskError,
    _infrastructure_error,
    _Outcome,
    _run_task,
)
from flipper_control.learning.worker_process import pool_worker_init, stop_pool, worker_start_guard

__all__ = ["EXECUTOR_KINDS", "Executor", "Pending", "ProcessExecutor", "SerialExecutor", "TaskError", "make_executor"]

EXECUTOR_KINDS = ("serial", "process", "ray")


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
