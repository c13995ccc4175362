"""Task functions for ``test/test_executors.py``.

They live in the package, not in the test module, because spawned pool workers and Ray workers unpickle a
task function by importing its module: ``flipper_control`` is installed, while ``test/`` is not a package
(and ``test`` would name the standard library's test package).
"""

from __future__ import annotations

import os
import time


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
