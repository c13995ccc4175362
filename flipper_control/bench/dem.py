"""`flipper bench dem`: DEM builder throughput on 1M-point clouds against a straightforward numpy baseline.

The baseline transforms every point into the DEM frame, tests every point against the body box in
base_link, and takes the per-cell maximum with ``np.maximum.at`` -- the obvious numpy code. The builder
crops first (``perception.dem_builder``). Both run in the same process pinned to one CPU, on the same
clouds, and their DEMs must be equal (NaN in the same cells). Two clouds:

- ``lidar``: a robot pitched on the ``stairs_up`` staircase, returns spread like a spinning lidar's
  (uniform in bearing and range out to 15 m, so density falls as 1/r) on the terrain, with a few
  returns on the robot itself and some NaN returns;
- ``dense``: every return inside the DEM's footprint (as after ``PointMap.crop`` of a dense map): the
  builder's worst case, where cropping saves nothing.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np

from flipper_control.bench.common import one_core
from perception.dem_builder import DemBuilder, RobotPose
from sim.rotations import quat_from_euler
from sim.terrain import HeightGrid, world_solids
from sim.world_sets import resolve_world


def baseline_dem(builder: DemBuilder, points: np.ndarray, position, quat) -> np.ndarray:
    """The straightforward version: every point transformed and body-tested, ``np.maximum.at`` into the cells."""
    pose = RobotPose.from_quat(position, quat)
    pts = np.asarray(points, dtype=np.float64)
    s = builder.spec
    u, v, z = builder.cell_coords(pts, pose)
    with np.errstate(invalid="ignore"):  # NaN points
        keep = builder.in_dem(u, v, z, pose) & ~builder.in_body(u, v, z, pose)
    cell = u[keep].astype(np.intp) * s.cols + v[keep].astype(np.intp)
    out = np.full(s.rows * s.cols, -np.inf)
    np.maximum.at(out, cell, z[keep] - pose.position[2])
    out[np.isneginf(out)] = np.nan
    return out.astype(np.float32).reshape(s.shape)


def bench_clouds(n_points: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The ``lidar`` and ``dense`` clouds (see module docstring) and the robot pose (position, quat) they share."""
    world = resolve_world("stairs_up")
    grid = HeightGrid.for_world(world, world_solids(world), resolution=0.02)
    first_step = min(p.position[0] for p in world.terrain)
    position = np.array([first_step - 0.2, 0.05, 0.15])
    quat = quat_from_euler(0.05, -0.3, 0.25)  # nose up on the first step, slightly rolled and turned
    n_body = n_points // 100
    n_nan = n_points // 200
    n_terrain = n_points - n_body - n_nan
    builder = DemBuilder()
    rot = RobotPose.from_quat(position, quat).rotation
    lo, hi = np.array(builder.config.body_min), np.array(builder.config.body_max)
    body = rng.uniform(lo, hi, size=(n_body, 3)) @ rot.T + position
    nan = np.full((n_nan, 3), np.nan)

    bearing = rng.uniform(-math.pi, math.pi, n_terrain)
    rng_m = rng.uniform(0.3, 15.0, n_terrain)
    x, y = position[0] + rng_m * np.cos(bearing), position[1] + rng_m * np.sin(bearing)
    lidar = np.column_stack([x, y, grid.height_at(x, y) + rng.normal(0, 0.01, n_terrain)])

    s, yaw = builder.spec, RobotPose.from_quat(position, quat).yaw
    lx = rng.uniform(s.front - s.rows * s.resolution, s.front, n_terrain)
    ly = rng.uniform(-s.cols * s.resolution / 2, s.cols * s.resolution / 2, n_terrain)
    x = position[0] + math.cos(yaw) * lx - math.sin(yaw) * ly
    y = position[1] + math.sin(yaw) * lx + math.cos(yaw) * ly
    dense = np.column_stack([x, y, grid.height_at(x, y) + rng.normal(0, 0.01, n_terrain)])

    def mix(terrain: np.ndarray) -> np.ndarray:
        pts = np.concatenate([terrain, body, nan])
        return pts[rng.permutation(len(pts))]

    return {"lidar": mix(lidar), "dense": mix(dense)}, position, quat


def _times(fn, repeats: int) -> list[float]:
    fn()  # warm-up: first-touch page faults of the output buffers
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_dem(n_points: int = 1_000_000, repeats: int = 5, seed: int = 0) -> dict:
    """Builder and baseline on both clouds: seconds per cloud (best and median), M points/s, equality.

    numpy's elementwise loops are single-threaded and neither path calls BLAS, so pinning to one CPU
    makes this a one-core figure. The headline ``points_per_s`` is the builder's median on the lidar cloud.
    """
    if n_points < 1000 or repeats < 1:
        raise ValueError(f"bench_dem: need n_points >= 1000 and repeats >= 1, got {n_points}, {repeats}")
    rng = np.random.default_rng(seed)
    clouds, position, quat = bench_clouds(n_points, rng)
    builder = DemBuilder()
    out: dict = {"n_points": n_points, "repeats": repeats, "seed": seed, "numpy": np.__version__}
    with one_core() as cpu:
        out["cpu"] = cpu
        for name, pts in clouds.items():
            fast = builder.build(pts, position, quat)
            base = baseline_dem(builder, pts, position, quat)
            t_fast = _times(lambda pts=pts: builder.build(pts, position, quat), repeats)
            t_base = _times(lambda pts=pts: baseline_dem(builder, pts, position, quat), repeats)
            med_fast, med_base = statistics.median(t_fast), statistics.median(t_base)
            out[name] = {
                "builder_s": {"best": min(t_fast), "median": med_fast},
                "baseline_s": {"best": min(t_base), "median": med_base},
                "builder_mpts_per_s": n_points / med_fast / 1e6,
                "baseline_mpts_per_s": n_points / med_base / 1e6,
                "speedup": med_base / med_fast,
                "equal_to_baseline": bool(np.array_equal(fast, base, equal_nan=True)),
                "cells_filled": int(np.isfinite(fast).sum()),
            }
    out["points_per_s"] = out["lidar"]["builder_mpts_per_s"] * 1e6
    out["equal_to_baseline"] = all(out[name]["equal_to_baseline"] for name in clouds)
    return out


def format_report(out: dict) -> str:
    """The lines ``flipper bench dem`` prints."""
    lines = [f"DEM builder, {out['n_points']} points, one CPU ({out['cpu']}), median of {out['repeats']}, "
             f"numpy {out['numpy']}"]
    for name in ("lidar", "dense"):
        r = out[name]
        lines.append(f"  {name:5s} cloud: builder {r['builder_mpts_per_s']:7.1f} M points/s   baseline (np.maximum.at) "
                     f"{r['baseline_mpts_per_s']:6.1f} M points/s   ({r['speedup']:.1f}x, equal: {r['equal_to_baseline']})")
    return "\n".join(lines)
