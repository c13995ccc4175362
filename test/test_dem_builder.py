"""The DEM builder and the point map, checked against the exact simulated DEM and independent references.

Clouds are sampled on the analytic surfaces of the built-in ``stairs_up`` staircase (tread tops from
the world's documented geometry, their edges included), so a dense cloud must give the DEM that
``sim.dem.DemExtractor`` reads from the height grid. The body filter and frame handling are checked
against a reference written here with plain rotation matrices, not the builder's folded arithmetic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flipper_control.bench.dem import baseline_dem, bench_dem
from perception.dem_builder import DemBuilder, DemBuilderConfig, RobotPose, body_box, cell_max
from perception.point_map import PointMap
from sim.dem import DemExtractor, DemSpec
from sim.robot import RobotSpec
from sim.rotations import quat_from_euler
from sim.terrain import HeightGrid, world_solids
from sim.world_sets import resolve_world

STAIRS = resolve_world("stairs_up")
SOLIDS = world_solids(STAIRS)
NO_BODY = DemBuilderConfig(body_min=(0.0, 0.0, 0.0), body_max=(0.0, 0.0, 0.0))  # keeps every terrain point


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _top_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The staircase's surface: highest top of the (axis-aligned) boxes over each (x, y), 0 on the ground."""
    z = np.zeros(np.shape(x))
    for s in SOLIDS:
        (cx, cy, cz), (hx, hy, hz) = s.center, s.half
        assert s.yaw == 0 and s.pitch == 0
        inside = (np.abs(x - cx) <= hx) & (np.abs(y - cy) <= hy)
        z = np.where(inside, np.maximum(z, cz + hz), z)
    return z


def _stairs_cloud(rng: np.random.Generator, center, half: float = 2.5, n: int = 120_000) -> np.ndarray:
    """Dense points on the tread tops around ``center``: uniform samples plus every tread edge at 2 mm."""
    x = rng.uniform(center[0] - half, center[0] + half, n)
    y = rng.uniform(center[1] - half, center[1] + half, n)
    parts = [np.column_stack([x, y, _top_height(x, y)])]
    for s in SOLIDS:
        (cx, cy, cz), (hx, hy, hz) = s.center, s.half
        for ex in (cx - hx, cx + hx):  # the edges across the robot's path, where cells change level
            ey = np.arange(cy - hy, cy + hy, 0.002)
            parts.append(np.column_stack([np.full(ey.shape, ex), ey, np.full(ey.shape, cz + hz)]))
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def extractor() -> DemExtractor:
    grid = HeightGrid(SOLIDS, (-2.0, 6.0), (-1.5, 1.5), resolution=0.002)
    return DemExtractor(grid, DemSpec())


def _edge_clearance(px: float, spec: DemSpec) -> float:
    """Distance from the DEM's row borders (yaw 0) to the nearest tread edge it covers: the height grid
    reports up to one pixel (2 mm) beyond a border, points do not, so tests keep this above 2 mm."""
    borders = px + spec.front - np.arange(spec.rows + 1) * spec.resolution
    edges = np.array([e for s in SOLIDS for e in (s.center[0] - s.half[0], s.center[0] + s.half[0])])
    edges = edges[(edges > borders.min()) & (edges < borders.max())]
    return float(np.abs(borders[:, None] - edges[None, :]).min())


# ------------------------------------------------------------------------------------------ against sim.dem
@pytest.mark.parametrize("px, pz, roll, pitch", [
    (0.525, 0.089, 0.0, 0.0),  # on the ground, the first three steps ahead
    (1.625, 0.45, 0.15, -0.5),  # on the stairs, pitched nose up and rolled: the DEM frame ignores both
])
def test_dense_cloud_gives_the_simulated_dem(extractor, px, pz, roll, pitch):
    spec = extractor.spec
    assert _edge_clearance(px, spec) >= 0.005
    cloud = _stairs_cloud(np.random.default_rng(1), (px, 0.0))
    dem = DemBuilder(NO_BODY).build(cloud, (px, 0.0, pz), quat_from_euler(roll, pitch, 0.0))
    exact = extractor.extract(px, 0.0, pz, 0.0)
    assert dem.dtype == np.float32 and dem.shape == spec.shape
    assert np.isfinite(dem).all()
    assert len(np.unique(np.round(exact, 3))) >= 3  # several treads: a wrong row order would show
    np.testing.assert_allclose(dem, exact, atol=1e-5)


def test_cells_without_points_are_nan_and_the_rest_unchanged(extractor):
    px = 0.525
    cloud = _stairs_cloud(np.random.default_rng(2), (px, 0.0))
    gap = (cloud[:, 0] > px + 0.3) & (cloud[:, 0] < px + 0.6)  # rows 7..9 (x_h from 0.3 to 0.6 m)
    dem = DemBuilder(NO_BODY).build(cloud[~gap], (px, 0.0, 0.089), (1.0, 0.0, 0.0, 0.0))
    exact = extractor.extract(px, 0.0, 0.089, 0.0)
    empty = np.zeros(dem.shape, dtype=bool)
    empty[7:10] = True
    assert np.isnan(dem[empty]).all()
    np.testing.assert_allclose(dem[~empty], exact[~empty], atol=1e-5)


def test_rotating_robot_and_cloud_together_leaves_the_dem_unchanged():
    rng = np.random.default_rng(3)
    px, pz = 0.525, 0.089
    cloud = _stairs_cloud(rng, (px, 0.0))
    q0 = quat_from_euler(0.05, -0.1, 0.0)
    builder = DemBuilder()
    before = builder.build(cloud, (px, 0.0, pz), q0)
    for yaw in (0.7, math.pi / 2, -2.5):
        rot = _yaw_matrix(yaw)
        shift = np.array([3.0, -4.0, 0.5])  # and move everything: heights are relative to base_link
        q = quat_from_euler(0.05, -0.1, yaw)
        after = builder.build(cloud @ rot.T + shift, rot @ (px, 0.0, pz) + shift, q)
        np.testing.assert_allclose(after, before, atol=1e-5)


def test_yawed_robot_on_stairs_sees_the_rotated_staircase(extractor):
    """Against the height grid at yaw 0.4: tread edges now cross cells diagonally, so a cell whose corner
    an edge barely clips may differ by one rise; everywhere else the heights agree."""
    px, pz, yaw = 0.9, 0.2, 0.4
    cloud = _stairs_cloud(np.random.default_rng(4), (px, 0.0), n=250_000)
    dem = DemBuilder(NO_BODY).build(cloud, (px, 0.0, pz), quat_from_euler(0.0, 0.0, yaw))
    exact = extractor.extract(px, 0.0, pz, yaw)
    err = np.abs(dem - exact)
    assert np.isfinite(dem).all()
    assert (err < 1e-3).mean() >= 0.9
    assert err.max() <= 0.18 + 1e-3
    # and the unrotated DEM is clearly wrong there: the builder really uses the yaw
    assert np.abs(extractor.extract(px, 0.0, pz, 0.0) - dem).max() > 0.1


def test_cell_layout_front_left_first_and_heights_relative_to_base_link():
    builder = DemBuilder()
    for yaw in (0.0, math.pi / 2):
        rot = _yaw_matrix(yaw)
        base = np.array([5.0, 1.0, 2.0])
        # heading-frame points: front-left corner cell, rear-right corner cell, one ahead of the robot
        local = np.array([[1.25, 0.24, 0.3], [-0.65, -0.24, -0.4], [0.55, 0.12, 0.1]])
        dem = builder.build(local @ rot.T + base, base, quat_from_euler(0.0, 0.0, yaw))
        assert dem[0, 0] == pytest.approx(0.3)
        assert dem[19, 4] == pytest.approx(-0.4)
        assert dem[7, 1] == pytest.approx(0.1)  # row (1.3 - 0.55) / 0.1 = 7.5, col (0.25 - 0.12) / 0.1 = 1.3
        assert np.isfinite(dem).sum() == 3


# ------------------------------------------------------------------------------------------ body filter
def _reference_dem(points, position, quat, config: DemBuilderConfig) -> np.ndarray:
    """Plain matrices: heading frame Rz(yaw)^T (p - pos), body frame R^T (p - pos), max per cell in a loop."""
    rot = RobotPose.from_quat(position, quat).rotation
    yaw = math.atan2(rot[1, 0], rot[0, 0])
    d = points - np.asarray(position)
    head = d @ _yaw_matrix(yaw)
    body = d @ rot
    s = config.dem
    inside = np.all((body >= config.body_min) & (body <= config.body_max), axis=1)
    out = np.full(s.shape, np.nan)
    for (xh, yh, zh), skip in zip(head, inside, strict=True):
        r, c = math.floor((s.front - xh) / s.resolution), math.floor((s.cols * s.resolution / 2 - yh) / s.resolution)
        if skip or not (0 <= r < s.rows and 0 <= c < s.cols and config.min_z <= zh <= config.max_z):
            continue
        out[r, c] = zh if np.isnan(out[r, c]) else max(out[r, c], zh)
    return out.astype(np.float32)


def test_body_points_are_removed_in_the_tilted_base_link_frame():
    rng = np.random.default_rng(5)
    position, quat = np.array([2.0, -1.0, 0.4]), quat_from_euler(-0.25, 0.35, 0.7)
    rot = RobotPose.from_quat(position, quat).rotation
    config = DemBuilderConfig()
    lo, hi = np.array(config.body_min), np.array(config.body_max)
    on_body = rng.uniform(lo, hi, size=(3000, 3)) @ rot.T + position  # self-hits, higher than any ground
    around = rng.uniform((-1.0, -0.5, -0.4), (1.5, 0.5, 0.7), size=(6000, 3)) @ _yaw_matrix(0.7).T + position
    cloud = np.concatenate([on_body, around])
    dem = DemBuilder(config).build(cloud, position, quat)
    np.testing.assert_allclose(dem, _reference_dem(cloud, position, quat, config), atol=1e-6)
    # no self-hit survives: the DEM is the same without them
    np.testing.assert_array_equal(dem, DemBuilder(config).build(around, position, quat))
    # the body points would show without the filter, and a yaw-only (untilted) box would cut other points
    assert np.nanmax(DemBuilder(NO_BODY).build(cloud, position, quat) - dem) > 0.1
    untilted = DemBuilder(config).build(around, position, quat_from_euler(0.0, 0.0, 0.7))
    assert not np.array_equal(untilted, dem, equal_nan=True)


def test_default_body_box_keeps_the_ground_under_the_robot():
    robot = RobotSpec()
    lo, hi = body_box(robot)
    assert lo[2] > -robot.wheel_radius and hi[2] > robot.mast_top  # tracks' contact below, lidar inside
    assert hi[0] >= robot.wheel_base / 2 + robot.wheel_radius and hi[1] > robot.flipper_y
    assert DemBuilderConfig().body_min == lo
    rng = np.random.default_rng(6)
    xy = rng.uniform((-1.0, -0.5), (1.5, 0.5), size=(20_000, 2))
    ground = np.column_stack([xy, np.zeros(len(xy))])
    dem = DemBuilder().build(ground, (0.0, 0.0, robot.wheel_radius), (1.0, 0.0, 0.0, 0.0))
    np.testing.assert_allclose(dem, -robot.wheel_radius, atol=1e-6)  # every cell, those under the robot too


# ------------------------------------------------------------------------------------------ bad and odd input
def test_empty_nonfinite_and_out_of_range_points():
    builder = DemBuilder()
    pose = ((0.0, 0.0, 0.1), (1.0, 0.0, 0.0, 0.0))
    assert np.isnan(builder.build(np.empty((0, 3)), *pose)).all()
    assert builder.build(np.empty((0, 3)), *pose).shape == (20, 5)
    bad = np.array([[np.nan, 0.0, 0.0], [1.0, np.nan, 0.0], [1.0, 0.0, np.nan], [np.inf, 0.0, 0.0],
                    [1.0, -np.inf, 0.0], [1.0, 0.0, np.inf], [1.0, 0.0, -np.inf]])
    assert np.isnan(builder.build(bad, *pose)).all()
    good = np.random.default_rng(7).uniform((-0.7, -0.25, -0.2), (1.3, 0.25, 0.0), size=(2000, 3))
    mixed = np.concatenate([good, bad, good[:3] + (0.0, 0.0, 2.5), good[:3] - (0.0, 0.0, 3.0)])  # + ceiling, pit
    np.testing.assert_array_equal(builder.build(mixed, *pose), builder.build(good, *pose))
    assert np.isnan(builder.build(good + (0.0, 0.0, 3.0), *pose)).all()  # all above max_z


def test_float32_clouds_and_both_crop_paths_agree():
    rng = np.random.default_rng(8)
    builder = DemBuilder()
    pose = ((10.0, 20.0, 1.0), quat_from_euler(0.1, -0.2, 2.0))
    # all points in the footprint (the builder skips its crop) or 2 % of them (it crops and gathers)
    near = rng.uniform((-0.8, -0.3, -0.5), (1.4, 0.3, 0.5), size=(5000, 3)) @ _yaw_matrix(2.0).T + pose[0]
    far = rng.uniform(-50.0, 50.0, size=(100_000, 3)) + (200.0, 0.0, 0.0)
    x_lo, x_hi, y_lo, y_hi = builder.footprint_bounds(RobotPose.from_quat(*pose))
    inside = (near[:, 0] >= x_lo) & (near[:, 0] <= x_hi) & (near[:, 1] >= y_lo) & (near[:, 1] <= y_hi)
    assert inside.mean() > 2 * builder.GATHER_FRACTION
    dem = builder.build(near, *pose)
    assert np.isfinite(dem).sum() > 50
    np.testing.assert_array_equal(builder.build(np.concatenate([far, near, far]), *pose), dem)
    as32 = near.astype(np.float32)
    np.testing.assert_array_equal(builder.build(as32, *pose), builder.build(as32.astype(np.float64), *pose))
    np.testing.assert_array_equal(builder.build(near, pose[0], 3.0 * pose[1]), dem)  # quaternion normalised
    np.testing.assert_array_equal(dem, baseline_dem(builder, near, *pose))


@pytest.mark.parametrize("call, message", [
    (lambda b: b.build(np.zeros((4, 2)), (0, 0, 0), (1, 0, 0, 0)), "shape"),
    (lambda b: b.build(np.zeros((4, 3)), (0, 0, 0), (0, 0, 0, 0)), "quat"),
    (lambda b: b.build(np.zeros((4, 3)), (0, 0, 0), (1, 0, 0)), "quat"),
    (lambda b: b.build(np.zeros((4, 3)), (0, np.nan, 0), (1, 0, 0, 0)), "position"),
])
def test_bad_arguments_are_rejected(call, message):
    with pytest.raises(ValueError, match=message):
        call(DemBuilder())


@pytest.mark.parametrize("kwargs, message", [
    ({"body_min": (0.1, 0.0, 0.0), "body_max": (0.0, 0.0, 0.0)}, "body_min"),
    ({"body_min": (0.0, 0.0)}, "3 finite"),
    ({"body_min": "abc"}, "3 numbers"),
    ({"min_z": 1.0, "max_z": 1.0}, "min_z < max_z"),
    ({"dem": (20, 5)}, "DemSpec"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DemBuilderConfig(**kwargs)


def test_config_from_lists_and_for_another_robot():
    c = DemBuilderConfig(body_min=[-1, -1, 0], body_max=[1, 1, 1])
    assert c.body_min == (-1.0, -1.0, 0.0) and hash(c)
    big = DemBuilderConfig.for_robot(RobotSpec(wheel_base=0.8), DemSpec(rows=10, cols=10, resolution=0.2, front=1.0))
    assert big.body_max[0] > DemBuilderConfig().body_max[0] and big.dem.rows == 10


def test_cell_max_methods_agree():
    rng = np.random.default_rng(9)
    for n_cells in (7, 300, 70_000):
        cell = rng.integers(0, n_cells - 1, size=5000)  # the last cell stays empty
        values = rng.normal(size=5000)
        at, by_sort = cell_max(cell, values, n_cells, "at"), cell_max(cell, values, n_cells, "sort")
        np.testing.assert_array_equal(at, by_sort)
        assert np.isnan(at[-1])
        k = cell[0]
        assert at[k] == values[cell == k].max()
    with pytest.raises(ValueError, match="method"):
        cell_max(cell, values, n_cells, "loop")


# ------------------------------------------------------------------------------------------ point map
def test_point_map_keeps_the_highest_point_per_voxel():
    m = PointMap(voxel=0.1)
    assert m.add(np.array([[0.01, 0.01, 0.02], [0.05, 0.05, 0.08], [0.5, 0.5, 0.5]])) == 2
    assert len(m) == 2
    np.testing.assert_allclose(m.points(), [[0.05, 0.05, 0.08], [0.5, 0.5, 0.5]])
    assert m.add(np.array([[0.02, 0.02, 0.03]])) == 0  # lower: nothing changes
    assert m.add(np.array([[0.09, 0.09, 0.099]])) == 1  # higher: replaces
    np.testing.assert_allclose(m.points()[0], [0.09, 0.09, 0.099])
    m.add(np.array([[np.nan, 0.0, 0.0], [1e9, 0.0, 0.0], [-0.05, 0.05, 0.05]]))  # key order: x first
    assert m.rejected == 2 and len(m) == 3 and m.points()[0, 0] == -0.05
    assert m.nbytes == 3 * PointMap.BYTES_PER_POINT


def test_point_map_stays_within_its_bound_and_drops_the_least_recently_seen():
    rng = np.random.default_rng(10)
    bound = 4000 * PointMap.BYTES_PER_POINT + 17
    m = PointMap(voxel=0.05, max_bytes=bound)
    kept_alive = rng.uniform(0, 1, size=(200, 3))
    for _ in range(30):  # 30 x 3000 points in a 20 m cube: far more voxels than the bound holds
        m.add(rng.uniform(-10, 10, size=(3000, 3)))
        m.add(kept_alive)  # seen again every time
        assert m.nbytes <= bound
    assert len(m) == m.capacity == 4000 and m.evicted > 80_000
    stored = {tuple(p) for p in m.points()}
    assert all(tuple(p) in stored for p in kept_alive[np.unique(np.floor(kept_alive / 0.05), axis=0, return_index=True)[1]])


def test_point_map_is_deterministic_and_points_are_a_stable_snapshot():
    def fill():
        rng = np.random.default_rng(11)
        m = PointMap(voxel=0.05, max_bytes=2000 * PointMap.BYTES_PER_POINT)
        for _ in range(5):
            m.add(rng.uniform(-2, 2, size=(1500, 3)))
        return m

    a, b = fill(), fill()
    np.testing.assert_array_equal(a.points(), b.points())
    snap = a.points()
    copy = snap.copy()
    with pytest.raises(ValueError):
        snap[0, 0] = 1.0
    a.add(copy + 0.01)  # raises many voxels and inserts others
    np.testing.assert_array_equal(snap, copy)


def test_point_map_crop_is_a_vertical_cylinder():
    rng = np.random.default_rng(12)
    m = PointMap(voxel=0.02)
    pts = rng.uniform((-5, -5, -3), (5, 5, 3), size=(30_000, 3))
    m.add(pts)
    stored = m.points()
    center, radius = np.array([1.0, -0.5, 10.0]), 1.2  # z far away: must not matter
    got = m.crop(center, radius)
    want = stored[np.hypot(stored[:, 0] - 1.0, stored[:, 1] + 0.5) <= radius]
    assert len(want) > 1000
    np.testing.assert_array_equal(got, want)
    assert len(m.crop((100.0, 0.0), 1.0)) == 0
    with pytest.raises(ValueError, match="center"):
        m.crop((np.nan, 0.0), 1.0)


@pytest.mark.parametrize("kwargs, message", [({"voxel": 0.0}, "voxel"), ({"max_bytes": 10}, "max_bytes")])
def test_point_map_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PointMap(**kwargs)
    with pytest.raises(ValueError, match="shape"):
        PointMap().add(np.zeros((3, 2)))


# ------------------------------------------------------------------------------------------ bench and CLI
def test_bench_dem_compares_against_the_baseline(tmp_path):
    from flipper_control.cli import main

    out = tmp_path / "dem.json"
    assert main(["bench", "dem", "--points", "20000", "--repeats", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["equal_to_baseline"] and r["n_points"] == 20000
    for name in ("lidar", "dense"):
        assert r[name]["equal_to_baseline"] and r[name]["cells_filled"] >= 60
        assert r[name]["builder_mpts_per_s"] > 0 and r[name]["baseline_mpts_per_s"] > 0


@pytest.mark.slow
def test_bench_dem_reaches_30_million_points_per_second():
    r = bench_dem(1_000_000, repeats=5)
    assert r["equal_to_baseline"]
    assert r["lidar"]["builder_mpts_per_s"] >= 30 and r["dense"]["builder_mpts_per_s"] >= 30, r
