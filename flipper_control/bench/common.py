"""What every benchmark shares: pinning the process to one CPU (and torch to one thread) for a measurement,
naming the processor the figures were measured on, and the isolated namespace in which benches run ROS 2 graphs."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["cpu_model", "isolated_graph", "one_core", "one_core_one_thread"]


def cpu_model() -> str:
    """The processor's marketing name (Linux ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def one_core() -> Iterator[int | None]:
    """Pin this process to one CPU for a measurement and restore the affinity afterwards; yields the CPU, or None
    where the OS cannot pin (then nothing changes). Restoring matters: benches also run inside tests, whose later
    process pools must keep every CPU."""
    try:
        before = os.sched_getaffinity(0)
        cpu = min(before)
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        yield None
        return
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


@contextmanager
def one_core_one_thread() -> Iterator[int | None]:
    """``one_core`` with one torch intra-op thread, both restored afterwards (small networks: one thread is what a
    robot's control loop gets, and extra threads only add synchronisation)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_core() as cpu:
            yield cpu
    finally:
        torch.set_num_threads(threads)


def isolated_graph(script: str) -> list[str]:
    """The argv that runs the bash ``script`` in a ROS 2 graph of its own: a network namespace with only loopback
    (root: ``unshare -n``; otherwise in a user namespace too) and a private ``/dev/shm``. The second matters as
    much as the first: Fast DDS's shared-memory transport, discovery included, reaches every process on the
    machine with the same domain id whatever its network namespace. ``lo`` is brought up before ``script``."""
    unshare = ["unshare", "-n", "-m", "--propagation", "private"] if os.geteuid() == 0 else \
        ["unshare", "-rnm", "--propagation", "private"]
    return [*unshare, "bash", "-c", f"mount -t tmpfs -o size=512m tmpfs /dev/shm && ip link set lo up && {script}"]
