"""`flipper bench sim`: simulator speed and DEM extraction cost, each beside a baseline in the same run.

- physics baseline: the bare MuJoCo model stepped in a loop with fixed controls (no flipper rate
  limiting, safety monitor, DEM or controller) -- what the engine alone costs;
- closed loop: the heuristic controller driving the full simulator at 10 Hz, as in evaluation;
- DEM: ``DemExtractor.extract`` against a straightforward per-cell numpy version on the same grid.
Wall times are process CPU-bound on one thread; the real-time factor is simulated / wall seconds.
"""

from __future__ import annotations

import math
import time

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


def bench_physics_baseline(sim: MujocoSimulator, world: World, seconds: float) -> dict:
    import mujoco  # here, not at the top: ``sim`` sets MUJOCO_GL before mujoco's first import (sim/__init__.py)

    sim.reset(world, seed=0)
    m, d = sim.model, sim.data
    n = int(seconds / m.opt.timestep)
    t0 = time.perf_counter()
    for _ in range(n):
        mujoco.mj_step(m, d)
    wall = time.perf_counter() - t0
    return {"steps": n, "wall_s": wall, "steps_per_s": n / wall, "real_time_factor": n * m.opt.timestep / wall}


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


def bench_sim(world: World, seconds: float = 20.0, repeats: int = 3, dem_calls: int = 2000) -> dict:
    """All simulator figures for one world (see module docstring)."""
    from flipper_control.controllers import HeuristicController

    with one_core() as cpu:
        sim = MujocoSimulator(noise=SimNoise())
        out = {"world": world.name, "cpu": cpu, "timestep": sim.physics.timestep}
        out["physics_baseline"] = bench_physics_baseline(sim, world, seconds)
        out["closed_loop_heuristic"] = bench_closed_loop(sim, world, HeuristicController(), repeats)
        out["dem"] = bench_dem(sim, world, dem_calls)
    return out
