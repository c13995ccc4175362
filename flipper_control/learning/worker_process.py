"""What runs in and around an executor's worker processes: one compute thread each, peak-memory readings, and the
lifecycle of process-pool workers (they ignore Ctrl-C, die with their parent, even after a SIGKILL, and are
stopped without waiting for running tasks).

Kept apart from ``executors`` (which decides where tasks run) because this is the part that talks to the operating
system: signals, ``prctl``, ``/proc``, resource usage.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

__all__ = ["THREAD_ENV", "children_peak_rss_mib", "default_workers", "limit_threads", "merge_memory_reports", "peak_rss_mib",
           "pool_worker_init", "stop_pool", "worker_start_guard"]

# the thread pools of OpenMP, MKL and OpenBLAS read these once, when the library loads
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------ memory
def peak_rss_mib() -> float:
    """Peak resident set of this process in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``, the high-water mark of this process's own address
    space. Why not ``getrusage(RUSAGE_SELF).ru_maxrss`` there: the kernel carries the peak across fork+exec, so
    a spawned worker of a 500 MiB parent reports at least ~500 MiB however little it uses itself. Elsewhere
    (or if /proc is unreadable) it falls back to ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    return _maxrss_mib(resource.RUSAGE_SELF)


def children_peak_rss_mib() -> float:
    """Largest peak resident set among this process's terminated, waited-for children, in MiB (``RUSAGE_CHILDREN``).

    Caveats: live children are not counted (the process pool's workers appear only after ``close()``); the value
    includes what a child inherited at fork, so for spawned workers it is at least this process's RSS when it
    started them (prefer ``Executor.memory_report()``'s per-worker figures); Ray workers are children of the Ray
    node, not of this process.
    """
    return _maxrss_mib(resource.RUSAGE_CHILDREN)


def merge_memory_reports(earlier: object, now: dict) -> dict:
    """``Executor.memory_report()`` of this session combined with an earlier session's (a resumed run's report).

    Each peak is the larger of the two, so the report of a resumed run covers every session's workers, not
    only the steps this session ran. ``earlier`` comes from a file: anything but a dict of numbers is ignored.
    """
    if not isinstance(earlier, dict):
        return now

    def number(value: object) -> float:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0

    merged = {key: max(number(earlier.get(key)), now[key]) for key in
              ("parent_peak_rss_mib", "children_peak_rss_mib", "max_worker_peak_rss_mib")}
    workers = dict(now["worker_peak_rss_mib"])
    if isinstance(earlier.get("worker_peak_rss_mib"), dict):
        for pid, mib in earlier["worker_peak_rss_mib"].items():
            workers[str(pid)] = max(number(mib), workers.get(str(pid), 0.0))  # a pid may come back in a later session
    return merged | {"worker_peak_rss_mib": dict(sorted(workers.items()))}


def _maxrss_mib(who: int) -> float:
    kib = resource.getrusage(who).ru_maxrss
    return kib / (1024.0 * 1024.0) if sys.platform == "darwin" else kib / 1024.0


# ------------------------------------------------------------------------------------------ threads
def default_workers() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def limit_threads() -> None:
    """One compute thread per worker: the thread env vars for libraries loaded later, and torch's intra-op pool now.

    Why: with N workers on N cores, extra threads only oversubscribe; and small torch ops (a policy decision,
    one planner expansion) are about 50x slower with 2 threads than with 1 on a 2-core machine.
    """
    os.environ.update(THREAD_ENV)
    import torch  # a dependency of the package; imported here so workers that never touch torch still get the setting

    torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ pool workers
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WATCHDOG_POLL_S = 1.0  # how often a worker re-checks os.getppid() besides waiting on the lifeline pipe


def pool_worker_init(parent_pid: int, die_with_parent_thread: bool) -> None:
    """Initializer of every pool worker: ignore Ctrl-C, exit when the parent dies, one compute thread.

    ``die_with_parent_thread``: ask the kernel (Linux) to SIGKILL this worker when the thread that started it ends.
    The parent sets it only when that thread is its main thread, which lives as long as the process: for a pool
    started by another thread, the signal would kill healthy workers when that thread returns.
    """
    # Ctrl-C in a terminal signals the whole process group; the parent handles it and stops the workers, so a
    # worker must not die on its own halfway through a task (a KeyboardInterrupt traceback per worker). The parent
    # started us with SIGINT blocked (worker_start_guard), so one that came during start-up is pending: ignore, unblock.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if die_with_parent_thread:
        _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the steps above: nobody will collect our results
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="flipper-parent-watchdog", daemon=True).start()
    limit_threads()


@contextmanager
def worker_start_guard():
    """Start pool workers inside this block: Ctrl-C and SIGTERM wait until it ends, so no worker is half started.

    Two races, both seen in tests under load:

    - The child inherits the signal mask across fork and exec, so SIGINT is blocked here: a Ctrl-C to the process
      group during a worker's start-up (interpreter and imports, before ``pool_worker_init``) stays pending in the
      worker until it ignores it, instead of a "Fatal Python error" or KeyboardInterrupt traceback from the worker.
    - In this process, Python runs signal handlers in the main thread between bytecodes, whichever thread the
      kernel delivered the signal to, so a mask alone does not stop them. A KeyboardInterrupt or ``Terminated``
      raised while ``Process.start()`` writes the new worker's start-up data leaves a child that reads a truncated
      pipe ("EOFError: Ran out of input" on stderr after "flipper: terminated") and that the pool never registered,
      so nobody stops it. In the main thread the Python-level handlers are swapped for ones that only record the
      signal; the recorded signal's own handler runs when the block ends (a few milliseconds: a fork and exec).
    """
    recorded: list[tuple[int, object]] = []
    previous: dict[int, Callable] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(signum)
            if callable(handler):  # SIG_DFL / SIG_IGN act in C, at once and without an exception
                previous[signum] = handler
                signal.signal(signum, lambda signum, frame: recorded.append((signum, frame)))
    mask = hasattr(signal, "pthread_sigmask")
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if mask else None
    try:
        yield
    finally:
        if mask:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if recorded:  # the first one decides, as it would have without the block (it raises, as a rule)
            signum, frame = recorded[0]
            previous[signum](signum, frame)


def _set_parent_death_signal() -> None:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux: the kernel kills this process when its parent thread ends.

    Best effort (no libc, another OS): the watchdog thread covers the same case unless a task holds the GIL.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _watch_parent(parent_pid: int) -> None:
    """Worker thread: ``os._exit`` as soon as the parent process is gone (e.g. after a SIGKILL).

    A spawned worker holds the read end of a pipe whose write end only the parent holds
    (``multiprocessing.parent_process().sentinel``): it becomes readable (EOF) the moment the parent dies. The
    ``getppid`` check is the fallback (the worker is re-parented, to PID 1 or a subreaper).
    """
    import multiprocessing
    from multiprocessing.connection import wait as wait_ready

    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    while os.getppid() == parent_pid:
        if sentinel is None:
            time.sleep(WATCHDOG_POLL_S)
        elif wait_ready([sentinel], timeout=WATCHDOG_POLL_S):
            break
    os._exit(1)  # no clean-up: the parent that would read our results is gone


def stop_pool(pool: ProcessPoolExecutor, grace_s: float = 1.0) -> None:
    """Stop a process pool without waiting for running tasks: cancel what has not started, let idle workers exit
    for ``grace_s``, then SIGTERM (and after 1 s SIGKILL) the ones still busy.

    Why not ``shutdown(wait=True, cancel_futures=True)``: it still waits for every running task (minutes for a
    planning task), so Ctrl-C or SIGTERM would hang; and ``shutdown(wait=False)`` leaves busy workers running.
    Python 3.14 has ``terminate_workers()``; before that the worker processes are only in ``pool._processes``.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown(wait=False) forgets it
    pool.shutdown(wait=False, cancel_futures=True)  # idle workers get their exit sentinel now
    deadline = time.monotonic() + grace_s
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for stop in ("terminate", "kill"):
        alive = [p for p in processes if p.is_alive()]
        if not alive:
            break
        for p in alive:
            getattr(p, stop)()
        deadline = time.monotonic() + 1.0
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
    # Once its workers are gone the pool's manager thread closes its wake-up pipe. At interpreter exit Python 3.11
    # writes to that pipe without a lock (concurrent.futures' _python_exit), so an exit during the close printed
    # "Exception ignored ... Bad file descriptor" with a traceback; waiting for the thread here closes the window.
    if manager is not None:
        manager.join(timeout=1.0)
