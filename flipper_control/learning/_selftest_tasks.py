"""Task functions for ``test/test_executors.py`` and ``test/test_executor_signals.py``.

They live in the package, not in the test module, because spawned pool workers and Ray workers unpickle a
task function by importing its module: ``flipper_control`` is installed, while ``test/`` is not a package
(and ``test`` would name the standard library's test package).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def heuristic_episode(seed: int) -> tuple[str, float, float]:
    """One noisy heuristic run on ``step_up`` with noise seed ``seed`` -> (level, distance to 1 mm, time)."""
    from flipper_control.controllers import HeuristicController
    from sim.mujoco_sim import MujocoSimulator, SimNoise
    from sim.rollout import run_episode
    from sim.world_sets import resolve_world

    res = run_episode(MujocoSimulator(noise=SimNoise()), resolve_world("step_up"), HeuristicController(), seed=seed)
    return res.level, round(res.distance, 3), round(res.time, 3)


def sleep_and_echo(task: tuple[int, float]) -> tuple[int, int]:
    """``(value, seconds)`` -> ``(value, pid)`` after sleeping: uneven durations make tasks finish out of order."""
    value, seconds = task
    time.sleep(seconds)
    return value, os.getpid()


def mark_and_sleep(task: tuple[str, float]) -> int:
    """``(path, seconds)``: creates the file ``path`` (so a test knows the task is running), sleeps, returns the pid."""
    path, seconds = task
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def meet(task: tuple[str, int, float]) -> int:
    """``(folder, n, timeout_s)``: leaves this worker's pid in ``folder`` and waits until ``n`` workers have, so that
    ``n`` such tasks on ``n`` workers run at the same time, one per worker; returns the pid."""
    folder, n, timeout_s = task
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + timeout_s
    while len(list(Path(folder).iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(Path(folder).iterdir()))} of {n} workers arrived in {timeout_s} s")
        time.sleep(0.01)
    return os.getpid()


def fail_on(task: int) -> int:
    """Returns ``task`` squared, except that task 3 raises ``ValueError``."""
    if task == 3:
        raise ValueError("boom on purpose")
    return task * task


def allocate_mib(mib: int) -> int:
    """Touches ``mib`` MiB (so the worker's peak RSS grows by about that much) and returns the byte count."""
    block = bytearray(mib * 1024 * 1024)
    block[::4096] = b"\x01" * len(block[::4096])
    return len(block)
