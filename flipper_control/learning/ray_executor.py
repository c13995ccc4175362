"""The ``ray`` kind of ``executors``: tasks as Ray tasks, on a local instance started on first use or on a cluster.

The contract (results in task order, ``TaskError`` naming the task, per-worker peak memory, ``close()`` never
waiting for a running task) is the base ``Executor``'s, in ``executors``; this module only connects to Ray and
turns Ray's object references into the base's outcomes. Ray is imported on the first ``map`` or ``submit``, so
``make_executor("ray")`` costs nothing until then.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from flipper_control.learning.executor_base import Executor, _infrastructure_error, _Outcome, _run_task
from flipper_control.learning.ray_connect import check_reachable, connection_error, local_node_ip
from flipper_control.learning.worker_process import THREAD_ENV, limit_threads

__all__ = ["RayExecutor"]


def _ray_entry(fn: Callable[[Any], Any], task: Any) -> _Outcome:
    """Ray workers are long-lived and shared by jobs: set the thread count before every task (cheap)."""
    limit_threads()
    return _run_task(fn, task)


class RayExecutor(Executor):
    """Ray tasks (one CPU each). Connects on the first ``map``: to ``ray_address`` if given, else to an already
    initialised Ray in this process, else starts a local instance with ``num_cpus=workers`` on a loopback address;
    ``close()`` shuts Ray down only if this executor started it.

    Joining a cluster that uses token authentication needs ``RAY_AUTH_MODE=token`` and the cluster's token
    (``RAY_AUTH_TOKEN``, a file named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``) in this process's
    environment; Ray reads them itself. A failure to connect raises ``RayConnectionError`` naming the likely cause.
    """

    kind = "ray"

    def __init__(self, workers: int | None = None, ray_address: str | None = None):
        super().__init__(workers)
        self.ray_address = ray_address
        self._started_ray = False
        self._remote = None
        self.startup_s: float | None = None  # seconds ray.init took (None until connected)

    def _connect(self):
        import ray

        if self._remote is None:
            if not ray.is_initialized():
                t0 = time.perf_counter()
                common = dict(
                    include_dashboard=False,
                    logging_level=logging.ERROR,  # no "Started a local Ray instance" banners
                    log_to_driver=False,  # worker stdout/stderr stay in Ray's session logs; task errors still arrive
                    # workers read these when their libraries load, before limit_threads runs in the task
                    runtime_env={"env_vars": dict(THREAD_ENV)},
                )
                # ray.init replaces the SIGTERM handler by sys.exit(15); put back one the application installed
                # (flipper's turns SIGTERM into an exception it reports, exit status 143), keep Ray's otherwise
                in_main = threading.current_thread() is threading.main_thread()
                sigterm_handler = signal.getsignal(signal.SIGTERM) if in_main else None
                try:
                    if self.ray_address:
                        check_reachable(self.ray_address)
                        try:
                            ray.init(address=self.ray_address, **common)
                        except Exception as exc:  # ConnectionError, RuntimeError, AuthenticationError, ...: cannot join
                            raise connection_error(self.ray_address, exc) from exc
                    else:
                        ray.init(num_cpus=self.workers, _node_ip_address=local_node_ip(), **common)
                        self._started_ray = True
                finally:
                    if callable(sigterm_handler):
                        signal.signal(signal.SIGTERM, sigterm_handler)
                self.startup_s = time.perf_counter() - t0
            # SPREAD: each task takes a core for seconds to minutes, so a cluster's nodes should share them from the
            # first batch on; Ray's default packs onto the driver's node first and lets a fast first task take the
            # second one too (seen on a two-node cluster: every task on the head, the other node idle)
            self._remote = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_ray_entry)
        return ray

    def _map_outcomes(self, fn, tasks, collect) -> None:
        ray = self._connect()
        # put fn once in the object store instead of pickling it into every task
        fn_ref = ray.put(fn)
        refs = {self._remote.remote(fn_ref, task): i for i, task in enumerate(tasks)}
        pending = list(refs)
        try:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                for ref in finished:
                    index = refs[ref]
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # worker crash, object lost, ...
                        raise _infrastructure_error(index, exc) from exc
                    collect(index, outcome)
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # best effort: a task that already finished cannot be cancelled
                    pass

    def _submit_outcome(self, fn, task) -> Callable[[], _Outcome]:
        ray = self._connect()
        ref = self._remote.remote(fn, task)

        def wait_outcome() -> _Outcome:
            try:
                return ray.get(ref)
            except Exception as exc:  # worker crash, object lost, cancelled by close()
                raise _infrastructure_error(0, exc) from exc

        return wait_outcome

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
        self._remote = None
