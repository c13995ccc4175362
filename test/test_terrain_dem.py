"""Terrain rasterisation and the exact simulated DEM, checked against analytic terrain.

Every expectation here is computed from the primitives' documented geometry (position = near edge
on the centre line, stairs treads of ``run`` x ``rise``, ...) and the DEM layout of ``sim.dem`` (row 0
at ``front`` ahead, rows going backwards, column 0 on the left), never from the height grid itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.dem import DemExtractor, DemSpec
from sim.terrain import HeightGrid, world_solids
from sim.world import Box, Stairs, world_from_dict

RES = 0.01  # height-grid pixel size used throughout


def _world(*terrain, length: float = 6.0):
    return world_from_dict({"name": "t", "length": length, "terrain": list(terrain)})


def _grid(world, x_range=(-2.0, 8.0), y_range=(-2.0, 2.0)) -> HeightGrid:
    return HeightGrid(world_solids(world), x_range, y_range, RES)


def _pixel_bounds(grid: HeightGrid):
    """Lower and upper x (rows) and y (columns) edges of every pixel, as (nx, 1) and (1, ny) arrays."""
    x_lo = grid.x0 + np.arange(grid.nx)[:, None] * grid.resolution
    y_lo = grid.y0 + np.arange(grid.ny)[None, :] * grid.resolution
    return x_lo, x_lo + grid.resolution, y_lo, y_lo + grid.resolution


# ----------------------------------------------------------------------------------------- analytic terrain
def _box_height(box: Box, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Top of a (possibly yawed, possibly raised) box at points X, Y; 0 outside its footprint."""
    (px, py), (lx, wy, h) = box.position, box.size
    c, s = math.cos(box.yaw), math.sin(box.yaw)
    u = c * (X - px) + s * (Y - py)  # along the box, from its near edge
    v = -s * (X - px) + c * (Y - py)  # across, from its centre line
    return np.where((u >= 0) & (u <= lx) & (np.abs(v) <= wy / 2), box.z + h, 0.0)


def _treads(p: Stairs) -> list[tuple[float, float, float]]:
    """(x start, x end, height) of every horizontal surface of a staircase, from its documented shape."""
    x, n = p.position[0], p.steps
    if p.direction == "up":
        out = [(x + k * p.run, x + (k + 1) * p.run, (k + 1) * p.rise) for k in range(n)]
        last = out[-1]
        out[-1] = (last[0], last[1] + p.landing, last[2])
        return out
    assert p.platform is not None, "tests give descents an explicit platform"
    return [(x - p.platform, x, n * p.rise)] + [(x + (k - 1) * p.run, x + k * p.run, (n - k) * p.rise) for k in range(1, n)]


def _stairs_cell_max(world, x_lo, x_hi, y_lo, y_hi) -> float:
    """Highest tread of the world's staircases over the rectangle [x_lo, x_hi] x [y_lo, y_hi] (0: ground)."""
    best = 0.0
    for p in world.terrain:
        y_c, half = p.position[1], p.width / 2
        if y_hi <= y_c - half or y_lo >= y_c + half:
            continue
        for t0, t1, h in _treads(p):
            if t0 < x_hi and t1 > x_lo:
                best = max(best, h)
    return best


def _risers(world) -> np.ndarray:
    return np.array(sorted({e for p in world.terrain for t in _treads(p) for e in t[:2]}))


def _row_bounds(spec: DemSpec):
    """(back, front) distance ahead of base_link of each DEM row."""
    front = spec.front - np.arange(spec.rows) * spec.resolution
    return front - spec.resolution, front


def _col_bounds(spec: DemSpec):
    """(right, left) lateral offset (left positive) of each DEM column."""
    left = spec.cols * spec.resolution / 2 - np.arange(spec.cols) * spec.resolution
    return left - spec.resolution, left


def _overlapping(bounds, lo: float, hi: float) -> set[int]:
    a, b = bounds
    return {i for i in range(len(a)) if a[i] < hi and b[i] > lo}


def _clear_pose(spec: DemSpec, risers: np.ndarray, x_from: float, x_to: float, clearance: float = 0.02) -> float:
    """First robot x in [x_from, x_to) whose DEM row borders all lie >= clearance from every riser."""
    borders = spec.front - np.arange(spec.rows + 1) * spec.resolution
    for x in np.arange(x_from, x_to, 0.001):
        if np.min(np.abs((x + borders)[:, None] - risers[None, :])) >= clearance:
            return float(x)
    raise AssertionError("no pose clear of the risers: choose another world or spec")


# ----------------------------------------------------------------------------------------- HeightGrid
@pytest.mark.parametrize("z", [0.0, 0.1])
def test_axis_aligned_box_pixels(z):
    box = {"type": "box", "position": [1.003, 0.207], "size": [0.5, 0.4, 0.2], "z": z}
    grid = _grid(_world(box))
    x0, x1, y0, y1 = _pixel_bounds(grid)
    bx0, bx1, by0, by1 = 1.003, 1.503, 0.007, 0.407
    eps = 1e-6
    touches = (x1 > bx0 + eps) & (x0 < bx1 - eps) & (y1 > by0 + eps) & (y0 < by1 - eps)
    clear = (x1 < bx0 - eps) | (x0 > bx1 + eps) | (y1 < by0 - eps) | (y0 > by1 + eps)
    top = z + 0.2
    # conservative: every pixel the box covers even partly holds its top; the rest is ground
    np.testing.assert_array_equal(grid.heights[touches], top)
    np.testing.assert_array_equal(grid.heights[clear], 0.0)
    assert np.count_nonzero(touches) >= 50 * 40


@pytest.mark.parametrize("yaw", [0.4, -1.0, math.pi / 2])
def test_yawed_box_pixels(yaw):
    world = _world({"type": "box", "position": [1.0, 0.0], "size": [0.6, 0.3, 0.25], "yaw": yaw})
    box = world.terrain[0]
    grid = _grid(world)
    x0, _, y0, _ = _pixel_bounds(grid)
    cx, cy = x0 + RES / 2, y0 + RES / 2
    c, s = math.cos(yaw), math.sin(yaw)
    u = c * (cx - 1.0) + s * (cy - 0.0)
    v = -s * (cx - 1.0) + c * (cy - 0.0)
    reach = RES / 2 * (abs(c) + abs(s)) + 1e-5  # how far a pixel extends from its centre along a box axis, plus 0.01 mm
    inside = (u >= reach) & (u <= 0.6 - reach) & (np.abs(v) <= 0.15 - reach)  # whole pixel in the box
    # rotated footprints are dilated by up to half a pixel diagonal (conservative), so "clear" starts there
    clear = RES / math.sqrt(2) + 1e-5
    outside = (u < -clear) | (u > 0.6 + clear) | (np.abs(v) > 0.15 + clear)
    np.testing.assert_array_equal(grid.heights[inside], box.size[2])
    np.testing.assert_array_equal(grid.heights[outside], 0.0)
    assert np.count_nonzero(inside) > 0.8 * 0.6 * 0.3 / RES**2


@pytest.mark.parametrize("steps, rise, run", [(5, 0.17, 0.29), (3, 0.12, 0.34), (1, 0.2, 0.3)])
def test_stairs_up_tread_heights(steps, rise, run):
    world = _world({"type": "stairs", "position": [1.0, 0.0], "direction": "up", "steps": steps, "rise": rise,
                    "run": run, "width": 1.2, "landing": 1.0})
    grid = _grid(world)
    for k in range(steps):
        x_mid = 1.0 + (k + 0.5) * run
        assert grid.height_at(x_mid, 0.0) == pytest.approx((k + 1) * rise)
        assert grid.height_at(x_mid, 0.55) == pytest.approx((k + 1) * rise)  # still on the tread
        assert grid.height_at(x_mid, 0.65) == 0.0  # beside the staircase
    assert grid.height_at(1.0 + steps * run + 0.5, 0.0) == pytest.approx(steps * rise)  # on the landing
    assert grid.height_at(1.0 - 0.05, 0.0) == 0.0  # before the first riser
    assert grid.height_at(1.0 + steps * run + 1.0 + 0.05, 0.0) == 0.0  # after the landing


@pytest.mark.parametrize("steps, rise, run", [(5, 0.17, 0.29), (4, 0.15, 0.3)])
def test_stairs_down_tread_heights(steps, rise, run):
    world = _world({"type": "stairs", "position": [2.0, 0.0], "direction": "down", "steps": steps, "rise": rise,
                    "run": run, "width": 1.2, "platform": 1.5})
    grid = _grid(world)
    assert grid.height_at(2.0 - 0.75, 0.0) == pytest.approx(steps * rise)  # the platform
    for k in range(1, steps):
        x_mid = 2.0 + (k - 0.5) * run
        assert grid.height_at(x_mid, 0.0) == pytest.approx((steps - k) * rise)
    assert grid.height_at(2.0 + (steps - 1) * run + 0.05, 0.0) == 0.0  # at the bottom
    assert grid.height_at(2.0 - 1.5 - 0.05, 0.0) == 0.0  # behind the platform


@pytest.mark.parametrize("height", [0.25, -0.3])
def test_step_heights(height):
    grid = _grid(_world({"type": "step", "position": [2.0, 0.0], "height": height, "length": 1.0, "width": 1.0}))
    x0, x1 = (2.0, 3.0) if height > 0 else (1.0, 2.0)  # a rising step starts at x, a drop ends at x
    assert grid.height_at((x0 + x1) / 2, 0.0) == pytest.approx(abs(height))
    assert grid.height_at(x0 - 0.05, 0.0) == 0.0
    assert grid.height_at(x1 + 0.05, 0.0) == 0.0
    assert grid.height_at((x0 + x1) / 2, 0.55) == 0.0  # beside it


@pytest.mark.parametrize("direction", ["up", "down"])
@pytest.mark.parametrize("length, height", [(1.0, 0.2), (1.5, 0.3), (0.7, 0.1)])
def test_ramp_midpoint_is_half_height(direction, length, height):
    world = _world({"type": "ramp", "position": [1.0, 0.0], "length": length, "height": height, "width": 1.0,
                    "direction": direction, "plateau": 0.8})
    grid = _grid(world)
    slope = height / length
    assert abs(grid.height_at(1.0 + length / 2, 0.0) - height / 2) <= slope * RES + 1e-9
    quarter = height / 4 if direction == "up" else 3 * height / 4
    assert abs(grid.height_at(1.0 + length / 4, 0.0) - quarter) <= slope * RES + 1e-9
    plateau_x = 1.0 + length + 0.4 if direction == "up" else 1.0 - 0.4
    assert grid.height_at(plateau_x, 0.0) == pytest.approx(height)
    low_x = 1.0 - 0.05 if direction == "up" else 1.0 + length + 0.05
    assert grid.height_at(low_x, 0.0) == 0.0


@pytest.mark.parametrize("amplitude, seed", [(0.1, 7), (0.04, 1), (0.12, 123)])
def test_rough_patch_heights(amplitude, seed):
    world = _world({"type": "rough", "position": [1.0, 0.0], "length": 2.0, "width": 1.5, "amplitude": amplitude,
                    "cell": 0.15, "seed": seed})
    grid = _grid(world)
    x0, x1, y0, y1 = _pixel_bounds(grid)
    patch = (x0 >= 1.0) & (x1 <= 3.0) & (y0 >= -0.75) & (y1 <= 0.75)
    assert grid.heights[patch].max() <= amplitude
    assert grid.heights[patch].max() > 0.0
    assert np.count_nonzero(grid.heights[patch]) > 0.5 * np.count_nonzero(patch), "most of the patch is blocks"
    away = (x1 < 1.0 - RES) | (x0 > 3.0 + RES) | (y1 < -0.75 - RES) | (y0 > 0.75 + RES)
    np.testing.assert_array_equal(grid.heights[away], 0.0)


def test_rough_patch_is_seeded():
    def heights(seed):
        return _grid(_world({"type": "rough", "position": [1.0, 0.0], "length": 1.0, "seed": seed})).heights

    np.testing.assert_array_equal(heights(3), heights(3))
    assert not np.array_equal(heights(3), heights(4))


def test_height_at_outside_grid_is_ground():
    grid = _grid(_world({"type": "box", "position": [-3.0, 0.0], "size": [10.0, 10.0, 0.3]}), x_range=(0, 1), y_range=(0, 1))
    assert grid.heights.max() == pytest.approx(0.3)
    np.testing.assert_array_equal(grid.height_at(np.array([-0.5, 1.5, 0.5]), np.array([0.5, 0.5, -0.5])), 0.0)


def test_for_world_covers_the_course_and_descent_platforms(builtin_worlds):
    world = builtin_worlds["test/stairs_down"]  # its platform reaches behind the start
    grid = HeightGrid.for_world(world)
    assert grid.x0 <= world.start_x - 1.0 and grid.x0 + grid.nx * grid.resolution >= world.goal_x + 1.3
    top = sum(p.steps * p.rise for p in world.terrain)  # the platform stands as high as the flight
    assert grid.height_at(world.start_x, 0.0) == pytest.approx(top)
    assert grid.height_at(world.start_x - 0.9, 0.0) == pytest.approx(top)  # the platform reaches 1 m back


# ----------------------------------------------------------------------------------------- DEM
STAIRCASE = {  # the proxy course's staircase: risers every 0.30 m, so they share a phase with 0.1/0.05 cells
    "up": {"type": "stairs", "position": [1.2, 0.0], "direction": "up", "steps": 6, "rise": 0.16, "run": 0.30,
           "width": 1.2, "landing": 0.0},
    "down": {"type": "stairs", "position": [5.0, 0.0], "direction": "down", "steps": 6, "rise": 0.16, "run": 0.30,
             "width": 1.2, "platform": 2.0},
}
SMALL_SPEC = DemSpec(rows=10, cols=4, resolution=0.05, front=0.3)


@pytest.mark.parametrize(
    "terrain, x_range, spec, y",
    [
        ("staircase", (0.0, 0.6), DemSpec(), 0.0),  # in front of the first step
        ("staircase", (0.8, 1.6), DemSpec(), 0.0),  # on the flight
        ("staircase", (4.0, 4.6), DemSpec(), 0.0),  # looking down the descent
        ("staircase", (0.8, 1.6), DemSpec(), 0.5),  # the staircase's side edge crosses the DEM
        ("staircase", (1.2, 1.7), SMALL_SPEC, 0.0),
        ("staircase", (5.0, 5.5), SMALL_SPEC, 0.1),
        ("stairs_up", (0.0, 0.6), DemSpec(), 0.0),  # the test world: risers every 0.27 m
        ("stairs_up", (0.6, 1.2), DemSpec(), 0.0),
    ],
)
def test_dem_equals_highest_tread_under_each_cell(builtin_worlds, terrain, x_range, spec, y):
    world = (_world(STAIRCASE["up"], STAIRCASE["down"], length=7.5) if terrain == "staircase"
             else builtin_worlds["test/stairs_up"])
    # the test world's 0.27 m run never leaves every 0.1 m row border 2 cm clear of a riser; 1.2 cm
    # (more than one 1 cm grid pixel) still is
    x = _clear_pose(spec, _risers(world), *x_range, clearance=0.012 if terrain == "stairs_up" else 0.02)
    z = 0.3
    dem = DemExtractor(HeightGrid.for_world(world), spec).extract(x, y, z, 0.0)
    assert dem.shape == spec.shape and dem.dtype == np.float32
    back, front = _row_bounds(spec)
    right, left = _col_bounds(spec)
    expected = np.array([[_stairs_cell_max(world, x + back[i], x + front[i], y + right[j], y + left[j]) - z
                          for j in range(spec.cols)] for i in range(spec.rows)])
    np.testing.assert_allclose(dem, expected, atol=1e-6)
    assert len(np.unique(expected)) >= 2, "the DEM should see at least one riser (else the test is weak)"


def test_dem_rows_and_columns_follow_the_documented_layout():
    spec = DemSpec()
    h, z = 0.3, 0.1
    # a wall across the course from x = 1.02 to 1.18 (2 cm clear of the 0.1 m cell borders)
    ahead = _world({"type": "box", "position": [1.02, 0.0], "size": [0.16, 2.0, h]})
    dem = DemExtractor(HeightGrid.for_world(ahead), spec).extract(0.0, 0.0, z, 0.0)
    rows = set(np.nonzero(dem.max(axis=1) > 0)[0])
    assert rows == _overlapping(_row_bounds(spec), 1.02, 1.18)
    assert max(rows) < spec.rows // 2, "something ahead must appear in the low (front) rows"
    np.testing.assert_allclose(dem[sorted(rows)], h - z, atol=1e-6)
    # a rail along the course at y in [0.16, 0.24]: to the left, so column 0 only
    left = _world({"type": "box", "position": [-1.0, 0.2], "size": [2.5, 0.08, h]})
    dem = DemExtractor(HeightGrid.for_world(left), spec).extract(0.0, 0.0, z, 0.0)
    assert _overlapping(_col_bounds(spec), 0.16, 0.24) == {0}
    np.testing.assert_allclose(dem[:, 0], h - z, atol=1e-6)
    np.testing.assert_allclose(dem[:, 1:], -z, atol=1e-6)


def test_dem_turns_with_the_robot_yaw():
    spec = DemSpec()
    h, z = 0.3, 0.1
    # a post at world x in [0.16, 0.24], y in [1.02, 1.18]: facing +y (yaw pi/2) it is ahead and to the right
    world = _world({"type": "box", "position": [0.16, 1.10], "size": [0.08, 0.16, h]})
    ex = DemExtractor(HeightGrid.for_world(world), spec)
    dem = ex.extract(0.0, 0.0, z, math.pi / 2)
    expected_rows = _overlapping(_row_bounds(spec), 1.02, 1.18)  # distance ahead = world y
    expected_cols = _overlapping(_col_bounds(spec), -0.24, -0.16)  # left offset = -world x
    assert expected_cols == {spec.cols - 1}
    high = {(int(i), int(j)) for i, j in zip(*np.nonzero(dem > 0), strict=True)}
    assert high == {(i, j) for i in expected_rows for j in expected_cols}
    assert max(expected_rows) < spec.rows // 2
    np.testing.assert_allclose(dem[dem > 0], h - z, atol=1e-6)
    # facing +x the same post is 1.1 m to the left: outside the 0.25 m half width
    np.testing.assert_allclose(ex.extract(0.0, 0.0, z, 0.0), -z, atol=1e-6)


@pytest.mark.parametrize("spec", [DemSpec(), SMALL_SPEC, DemSpec(rows=7, cols=9, resolution=0.15, front=0.6)])
@pytest.mark.parametrize("pose", [(1.0, 0.0, 0.2, 0.3), (-50.0, 30.0, 0.0, 2.0), (500.0, 0.0, 1.0, -3.0)])
def test_dem_shape_dtype_and_no_nan(builtin_worlds, spec, pose):
    """Also far off the height grid, where the DEM reads the grid's border (ground)."""
    dem = DemExtractor(HeightGrid.for_world(builtin_worlds["test/mixed"]), spec).extract(*pose)
    assert dem.shape == spec.shape
    assert dem.dtype == np.float32
    assert np.all(np.isfinite(dem))


def test_dem_is_relative_to_robot_height(builtin_worlds):
    ex = DemExtractor(HeightGrid.for_world(builtin_worlds["test/stairs_up"]))
    np.testing.assert_allclose(ex.extract(0.9, 0.0, 0.0, 0.1) - ex.extract(0.9, 0.0, 0.45, 0.1), 0.45, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"rows": 0}, {"cols": -1}, {"resolution": 0.0}])
def test_dem_spec_rejects_empty_grids(kwargs):
    with pytest.raises(ValueError):
        DemSpec(**kwargs)


# ----------------------------------------------------------------------------------------- conservative DEM
BOX_WORLD = [
    {"type": "box", "position": [1.0, 0.3], "size": [0.5, 0.4, 0.2]},
    {"type": "box", "position": [2.0, -0.4], "size": [0.3, 0.6, 0.35], "yaw": 0.5},
    {"type": "box", "position": [0.5, -0.5], "size": [0.2, 0.2, 0.1]},
    {"type": "box", "position": [1.1, 0.35], "size": [0.2, 0.2, 0.1], "z": 0.2, "yaw": -0.7},
]


def _true_cell_max(world, spec: DemSpec, pose, shrink: float, n: int = 33) -> np.ndarray:
    """Brute force: highest analytic terrain over each DEM cell footprint, shrunk by ``shrink`` on every side."""
    x, y, yaw = pose
    t = np.linspace(0.0, 1.0, n)
    r = spec.resolution
    ahead = spec.front - np.arange(spec.rows)[:, None] * r - shrink - t[None, :] * (r - 2 * shrink)  # (rows, n)
    left = spec.cols * r / 2 - np.arange(spec.cols)[:, None] * r - shrink - t[None, :] * (r - 2 * shrink)  # (cols, n)
    LX, LY = ahead[:, :, None, None], left[None, None, :, :]
    c, s = math.cos(yaw), math.sin(yaw)
    X, Y = x + c * LX - s * LY, y + s * LX + c * LY  # (rows, n, cols, n)
    heights = np.zeros(X.shape)
    for box in world.terrain:
        heights = np.maximum(heights, _box_height(box, X, Y))
    return heights.max(axis=(1, 3))


def _random_poses(n: int, seed: int):
    rng = np.random.default_rng(seed)
    poses = [(rng.uniform(-0.5, 2.5), rng.uniform(-0.6, 0.6), 0.0) for _ in range(n // 3)]  # axis-aligned
    poses += [(rng.uniform(-0.5, 2.5), rng.uniform(-0.6, 0.6), rng.uniform(-math.pi, math.pi)) for _ in range(n - n // 3)]
    return poses


def _shortfall(shrink: float, n_poses: int = 60, seed: int = 0, sign: float = 1.0) -> float:
    """Largest amount by which the DEM falls below (sign 1) or rises above (sign -1) the brute-force cell maxima."""
    world = _world(*BOX_WORLD)
    spec = DemSpec()
    ex = DemExtractor(HeightGrid.for_world(world, resolution=RES), spec)
    worst = 0.0
    for pose in _random_poses(n_poses, seed):
        z = 0.15
        dem = ex.extract(pose[0], pose[1], z, pose[2])
        worst = max(worst, float(np.max(sign * (_true_cell_max(world, spec, pose, shrink) - z - dem))))
    return worst


def test_dem_is_conservative_up_to_one_grid_pixel():
    """Never below the highest terrain point at least one grid pixel inside the cell footprint."""
    assert _shortfall(shrink=RES) <= 1e-6


def test_dem_is_conservative_on_the_whole_footprint():
    """Never below the highest terrain point of the cell's footprint (a pixel cut by a border counts for both)."""
    assert _shortfall(shrink=0.0) <= 1e-6


def test_dem_does_not_report_terrain_from_far_outside_the_cell():
    """Conservative but tight: nothing beyond the footprint grown by a pixel diagonal (sample to pixel)
    plus half a diagonal (the dilation of rotated blocks in the grid) may raise a cell."""
    assert _shortfall(shrink=-2.2 * RES, sign=-1.0) <= 1e-6


def test_dem_sees_a_block_reaching_just_into_a_cell():
    # robot at x = 0.004: row 2 covers x in [1.004, 1.104]; a block from x = 1.102 reaches 2 mm into it
    world = _world({"type": "box", "position": [1.102, 0.0], "size": [0.5, 2.0, 0.3]})
    spec = DemSpec()
    grid = HeightGrid(world_solids(world), (-3.0, 5.0), (-2.0, 2.0), RES)  # pixel borders at whole centimetres
    dem = DemExtractor(grid, spec).extract(0.004, 0.0, 0.0, 0.0)
    back, front = _row_bounds(spec)
    assert 0.004 + back[2] < 1.102 < 0.004 + front[2]
    np.testing.assert_allclose(dem[2], 0.3, atol=1e-6)
