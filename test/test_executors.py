"""Executors: serial, process pool and a real local Ray instance give the same results, in task order, with
task failures surfacing as ``TaskError`` naming the task, and per-worker peak memory recorded; closing a pool does
not wait for running tasks. Stopping by signals is in test_executor_signals.py, ``--ray-address`` against a real
two-node Ray cluster in test_ray_cluster.py."""

from __future__ import annotations

import os
import pickle
import time

import pytest

from flipper_control.learning import _selftest_tasks as tasks
from flipper_control.learning.executors import (
    EXECUTOR_KINDS,
    ProcessExecutor,
    SerialExecutor,
    TaskError,
    make_executor,
)
from flipper_control.learning.ray_executor import RayExecutor
from flipper_control.learning.worker_process import children_peak_rss_mib, peak_rss_mib


@pytest.fixture(scope="module", params=EXECUTOR_KINDS)
def executor(request):
    """One executor per kind for the whole module: the pool and Ray start once (Ray takes a few seconds)."""
    ex = make_executor(request.param, workers=2)
    yield ex
    ex.close()
    if request.param == "ray":
        import ray

        assert not ray.is_initialized()  # the executor started Ray, so close() shut it down


@pytest.fixture(scope="module")
def serial_episodes():
    """The reference: three noisy heuristic runs on step_up, in this process."""
    with make_executor("serial") as ex:
        return ex.map(tasks.heuristic_episode, [0, 1, 2])


def test_make_executor_kinds():
    assert isinstance(make_executor("serial"), SerialExecutor)
    with make_executor("process", workers=3) as ex:  # the pool starts lazily: nothing to clean up but close
        assert isinstance(ex, ProcessExecutor) and ex.workers == 3
    assert isinstance(make_executor("ray", workers=1), RayExecutor)  # does not start Ray until map
    assert make_executor("process").workers >= 1
    with pytest.raises(ValueError, match="unknown executor kind 'dask'.*serial, process, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        make_executor("process", workers=0)


def test_same_results_as_serial(executor, serial_episodes):
    """Tasks carry their noise seeds, so every kind returns exactly the serial results."""
    assert len(set(serial_episodes)) > 1  # the seeds really change the runs, so order matters
    assert all(level == "good" for level, _, _ in serial_episodes)
    assert executor.map(tasks.heuristic_episode, [0, 1, 2]) == serial_episodes


def test_order_preserved_with_uneven_durations(executor):
    """Early tasks sleep longest, so parallel kinds finish them last; results still come in task order."""
    sleeps = [0.6, 0.3, 0.0, 0.1, 0.0, 0.2]
    calls = []
    out = executor.map(tasks.sleep_and_echo, list(enumerate(sleeps)), progress=lambda done, total: calls.append((done, total)))
    assert [value for value, _ in out] == list(range(len(sleeps)))
    assert calls == [(i + 1, len(sleeps)) for i in range(len(sleeps))]
    if executor.kind != "serial":
        assert len({pid for _, pid in out}) == 2  # both workers took tasks


def test_task_exception_names_index(executor):
    with pytest.raises(TaskError, match=r"task 3 failed: ValueError: boom on purpose") as info:
        executor.map(tasks.fail_on, list(range(6)))
    assert info.value.index == 3
    assert "boom on purpose" in info.value.remote_traceback and "fail_on" in info.value.remote_traceback
    assert isinstance(info.value.__cause__, ValueError)
    assert executor.map(tasks.fail_on, [1, 2]) == [1, 4]  # still usable after a failure


def test_a_submitted_task_gives_the_serial_result_and_maps_run_beside_it(executor, serial_episodes):
    """``submit`` returns at once; on the parallel kinds the task holds one worker while ``map`` uses the other."""
    assert executor.submit(tasks.heuristic_episode, 1).result() == serial_episodes[1]
    for _ in range(20 if executor.kind != "serial" else 0):  # both workers up (Ray starts its second one lazily),
        if len({p for _, p in executor.map(tasks.sleep_and_echo, [(0, 0.5), (1, 0.5)])}) == 2:  # so that no
            break  # worker's start-up is timed below
    t0 = time.perf_counter()
    slow = executor.submit(tasks.sleep_and_echo, (7, 3.0))
    beside = executor.map(tasks.sleep_and_echo, [(0, 0.0), (1, 0.0), (2, 0.0)])
    mapped_s = time.perf_counter() - t0
    assert [v for v, _ in beside] == [0, 1, 2]
    value, pid = slow.result()
    assert value == 7 and slow.result() == (7, pid)  # a second call gives the same value without waiting
    if executor.kind == "serial":
        assert pid == os.getpid() and mapped_s >= 3.0  # serial runs a submitted task at once, in order
    else:
        assert pid != os.getpid() and mapped_s < 3.0  # the map did not wait for the sleeping task
        assert all(p != pid for _, p in beside)  # it ran on the other worker


def test_a_submitted_task_that_fails_raises_the_task_error(executor):
    pending = executor.submit(tasks.fail_on, 3)
    for _ in range(2):  # the same error again, not a silent None
        with pytest.raises(TaskError, match=r"task 0 failed: ValueError: boom on purpose"):
            pending.result()
    assert executor.submit(tasks.fail_on, 2).result() == 4


def test_empty_task_list(executor):
    assert executor.map(tasks.fail_on, []) == []


def test_peak_rss_reported(executor):
    executor.map(tasks.allocate_mib, [64, 1])
    report = executor.memory_report()
    assert report["parent_peak_rss_mib"] > 0 and report["children_peak_rss_mib"] >= 0
    assert report["worker_peak_rss_mib"] and all(v > 0 for v in report["worker_peak_rss_mib"].values())
    assert report["max_worker_peak_rss_mib"] >= 64  # the worker that touched 64 MiB


def test_runs_in_workers(executor):
    """Parallel kinds really run tasks in other processes; Ray is a real local instance started by the executor."""
    pids = {pid for _, pid in executor.map(tasks.sleep_and_echo, [(0, 0.0), (1, 0.0)])}
    assert (pids == {os.getpid()}) == (executor.kind == "serial")
    if executor.kind == "ray":
        import ray

        assert ray.is_initialized() and executor.startup_s > 0
        # the local instance advertises a loopback address (Ray would take the route towards 8.8.8.8 otherwise)
        assert ray.get_runtime_context().gcs_address.startswith("127.")
        # a second executor joins the running instance and must leave it running when closed
        with make_executor("ray", workers=1) as guest:
            assert guest.map(tasks.fail_on, [2]) == [4]
        assert ray.is_initialized()


def test_close_does_not_wait_for_running_tasks(tmp_path):
    """Task 1 fails at once while task 0 sleeps for a minute in the other worker: the TaskError arrives at once, and
    close() terminates the busy worker instead of waiting for its task (Ctrl-C and SIGTERM end up here too)."""
    ex = make_executor("process", workers=2)
    try:
        with pytest.raises(TaskError, match=r"task 1 failed: FileNotFoundError"):
            ex.map(tasks.mark_and_sleep, [(str(tmp_path / "sleeping"), 60.0), (str(tmp_path / "no" / "such" / "dir"), 0.0)])
        for _ in range(600):  # the sleeping task marks its start with its worker's pid
            if (tmp_path / "sleeping").exists() and (tmp_path / "sleeping").read_text():
                break
            time.sleep(0.05)
        busy = int((tmp_path / "sleeping").read_text())
        os.kill(busy, 0)  # still running its task (raises ProcessLookupError otherwise)
    finally:
        t0 = time.monotonic()
        ex.close()
        elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"close() took {elapsed:.1f} s"
    with pytest.raises(ProcessLookupError):
        os.kill(busy, 0)  # terminated and reaped
    ex.close()  # twice is fine


def test_unpicklable_function_reports_task():
    with make_executor("process", workers=1) as ex, pytest.raises(TaskError, match=r"task 0 failed: "):
        ex.map(lambda t: t, [1])


def test_memory_helpers_and_error_pickles():
    assert peak_rss_mib() > 0
    assert children_peak_rss_mib() >= 0
    err = pickle.loads(pickle.dumps(TaskError(5, "KeyError", "'x'", "tb")))  # safe: our own bytes, as the process pool sends them
    assert (err.index, str(err), err.remote_traceback) == (5, "task 5 failed: KeyError: 'x'", "tb")
