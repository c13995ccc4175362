"""`flipper bench sim`: simulator speed and DEM extraction cost, each beside a baseline in the same run.

- closed loop: the heuristic controller driving the full simulator at 10 Hz, as in evaluation;
- physics baseline: the same runs again on the bare engine -- the controls the closed loop applied at each physics
  step, recorded in an untimed pass, fed to ``mujoco.mj_step`` in a plain loop (no controller, DEM, flipper rate
  limiting or safety monitor). It retraces the closed loop's trajectory (checked: the final states are equal, bit
  for bit), so the two rates differ by our overhead alone. A fixed-controls loop, the baseline before this one, is
  not the same workload: with nothing to lift the flippers the robot pushes against the first riser for the whole
  run, and the contact solver made it slower than the closed loop it was meant to bound;
- DEM: ``DemExtractor.extract`` against a straightforward per-cell numpy version on the same grid.
Wall times are process CPU-bound on one thread; the real-time factor is simulated / wall seconds.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import numpy as np

from flipper_control.bench.common import one_core
from sim.dem import DemExtractor
from sim.mujoco_sim import MujocoSimulator, SimNoise
from sim.rollout import run_episode
from sim.world import World


def naive_dem(grid, spec, x: float, y: float, z: float, yaw: float) -> np.ndarray:
    """Baseline: loop over cells, rotate that cell's edge-to-edge samples, take the max."""
    out = np.empty(spec.shape, dtype=np.float32)
    k = max(1, math.ceil(spec.resolution / grid.resolution - 1e-9))
    edge = DemExtractor.EDGE
    sub = edge + np.arange(k + 1) / k * (spec.resolution - 2 * edge)
    c, s = math.cos(yaw), math.sin(yaw)
    for i in range(spec.rows):
        for j in range(spec.cols):
            lx = spec.front - i * spec.resolution - sub
            ly = spec.cols * spec.resolution / 2 - j * spec.resolution - sub
            gx, gy = np.meshgrid(lx, ly, indexing="ij")
            wx, wy = x + c * gx - s * gy, y + s * gx + c * gy
            out[i, j] = grid.height_at(wx, wy).max() - z
    return out


def bench_closed_loop(sim: MujocoSimulator, world: World, controller, repeats: int) -> dict:
    sim_time = wall = 0.0
    steps = 0
    results = []
    for r in range(repeats):
        t0 = time.perf_counter()
        res = run_episode(sim, world, controller, seed=r)
        wall += time.perf_counter() - t0
        sim_time += sim.time
        steps += int(round(sim.time / sim.model.opt.timestep))
        results.append(res.level)
    return {"runs": repeats, "levels": results, "sim_s": sim_time, "wall_s": wall, "steps_per_s": steps / wall,
            "real_time_factor": sim_time / wall}


@contextmanager
def _recording_controls(sim: MujocoSimulator):
    """Inside the block, every ``mj_step`` of ``sim`` appends a copy of the controls it steps with to the list
    yielded. Only for the untimed recording pass: it wraps the module's function, which costs a copy per step."""
    import mujoco  # here, not at the top: ``sim`` sets MUJOCO_GL before mujoco's first import (sim/__init__.py)

    recorded: list[np.ndarray] = []
    plain = mujoco.mj_step

    def step(m, d, *args):
        if d is sim.data:
            recorded.append(d.ctrl.copy())
        plain(m, d, *args)

    mujoco.mj_step = step
    try:
        yield recorded
    finally:
        mujoco.mj_step = plain


def bench_closed_loop_and_physics(sim: MujocoSimulator, world: World, controller, repeats: int) -> tuple[dict, dict]:
    """The closed loop's runs (seeds 0..repeats-1) and the bare engine retracing them: (closed loop, physics)."""
    import mujoco

    controls, finals = [], []
    for r in range(repeats):  # the recording pass, untimed
        with _recording_controls(sim) as recorded:
            run_episode(sim, world, controller, seed=r)
        controls.append(np.array(recorded))
        finals.append(sim.data.qpos.copy())
    closed = bench_closed_loop(sim, world, controller, repeats)
    wall, steps, same = 0.0, 0, True
    for r, ctrl in enumerate(controls):
        sim.reset(world, seed=r)  # the run's start state (and its noise draw) again
        m, d = sim.model, sim.data
        t0 = time.perf_counter()
        for row in ctrl:
            d.ctrl[:] = row
            mujoco.mj_step(m, d)
        wall += time.perf_counter() - t0
        steps += len(ctrl)
        same = same and bool(np.array_equal(d.qpos, finals[r]))
    m = sim.model
    physics = {"runs": repeats, "steps": steps, "wall_s": wall, "steps_per_s": steps / wall,
               "real_time_factor": steps * m.opt.timestep / wall, "same_trajectory": same}
    return closed, physics


def bench_dem(sim: MujocoSimulator, world: World, calls: int, seed: int = 0) -> dict:
    grid, spec = sim.grid, sim.dem_spec
    ext = DemExtractor(grid, spec)
    rng = np.random.default_rng(seed)
    poses = [(world.start_x + rng.uniform(0, world.length), rng.uniform(-0.1, 0.1), rng.uniform(0, 0.5),
              rng.uniform(-0.1, 0.1)) for _ in range(calls)]
    t0 = time.perf_counter()
    for p in poses:
        ext.extract(*p)
    fast = (time.perf_counter() - t0) / calls
    n_naive = max(1, calls // 20)
    t0 = time.perf_counter()
    for p in poses[:n_naive]:
        naive_dem(grid, spec, *p)
    naive = (time.perf_counter() - t0) / n_naive
    same = all(np.array_equal(ext.extract(*p), naive_dem(grid, spec, *p)) for p in poses[:n_naive])
    return {"calls": calls, "ms_per_call": fast * 1e3, "baseline_ms_per_call": naive * 1e3, "speedup": naive / fast,
            "equal_to_baseline": bool(same)}


def bench_sim(world: World, repeats: int = 3, dem_calls: int = 2000) -> dict:
    """All simulator figures for one world (see module docstring)."""
    from flipper_control.controllers import HeuristicController

    with one_core() as cpu:
        sim = MujocoSimulator(noise=SimNoise())
        out = {"world": world.name, "cpu": cpu, "timestep": sim.physics.timestep}
        out["closed_loop_heuristic"], out["physics_baseline"] = bench_closed_loop_and_physics(
            sim, world, HeuristicController(), repeats)
        out["dem"] = bench_dem(sim, world, dem_calls)
    return out
