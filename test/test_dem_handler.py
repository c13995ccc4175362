"""The DEM handler: tf buffer lookups, DEMs from clouds against analytic terrain, bad input skipped, the node's defaults."""

from __future__ import annotations

import importlib
import logging
import math
import sys

import numpy as np
import pytest

from perception.dem_builder import DemBuilderConfig
from perception.dem_handler import DemHandler, DemHandlerConfig, TfBuffer, TransformError
from perception.gridmap import dem_center, gridmap_to_dem
from perception.messages import msg, stamp, typestore
from perception.pointcloud import xyz_to_cloud
from sim.dem import DemSpec
from sim.robot import RobotSpec
from sim.robot_boxes import RobotBoxes
from sim.rotations import quat_to_matrix, yaw_quat

T0 = 1_700_000_000.0  # stamps as a robot would have them
NS = 1_000_000_000
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])
STEP_X, STEP_H = 1.0, 0.2  # a step across the map frame at x = 1.0 (clear of the robot body), 0.2 m high


def _ns(t: float) -> int:
    s = stamp(T0 + t)
    return s.sec * NS + s.nanosec


def _tf_msg(t: float, edges):
    """TFMessage of (parent, child, translation, (w, x, y, z)) edges stamped T0 + t."""
    ts = msg("geometry_msgs/msg/TransformStamped")
    out = []
    for parent, child, p, q in edges:
        out.append(ts(header=msg("std_msgs/msg/Header")(stamp=stamp(T0 + t), frame_id=parent), child_frame_id=child,
                      transform=msg("geometry_msgs/msg/Transform")(
                          translation=msg("geometry_msgs/msg/Vector3")(x=p[0], y=p[1], z=p[2]),
                          rotation=msg("geometry_msgs/msg/Quaternion")(x=q[1], y=q[2], z=q[3], w=q[0]))))
    return msg("tf2_msgs/msg/TFMessage")(transforms=out)


# ------------------------------------------------------------------------------------------ tf buffer
def test_lookup_composes_the_chain_and_its_inverse():
    tf = TfBuffer()
    tf.set_transform("map", "odom", 0, [1.0, 2.0, 0.0], yaw_quat(0.3))
    tf.set_transform("odom", "base_link", 5, [0.5, 0.0, 0.1], yaw_quat(-0.1))
    tf.set_transform("base_link", "lidar", 0, [0.1, 0.0, 0.4], UPRIGHT, static=True)
    p, q = tf.lookup("map", "lidar", 10)
    expected = np.array([1.0, 2.0, 0.0]) + quat_to_matrix(yaw_quat(0.3)) @ (
        np.array([0.5, 0.0, 0.1]) + quat_to_matrix(yaw_quat(-0.1)) @ np.array([0.1, 0.0, 0.4]))
    np.testing.assert_allclose(p, expected, atol=1e-12)
    np.testing.assert_allclose(q, yaw_quat(0.2), atol=1e-12)
    pi, qi = tf.lookup("lidar", "map", 10)  # the inverse maps the lidar origin back to zero
    np.testing.assert_allclose(quat_to_matrix(qi) @ expected + pi, 0.0, atol=1e-12)


def test_lookup_takes_the_latest_at_or_before_and_refuses_missing_or_stale():
    tf = TfBuffer()
    tf.set_transform("odom", "base_link", 2 * NS, [2.0, 0, 0], UPRIGHT)
    tf.set_transform("odom", "base_link", 1 * NS, [1.0, 0, 0], UPRIGHT)  # out of order: still sorted in
    assert tf.lookup("odom", "base_link", int(1.5 * NS))[0][0] == 1.0
    assert tf.lookup("odom", "base_link", 2 * NS)[0][0] == 2.0  # at the stamp counts
    with pytest.raises(TransformError, match=r"no odom -> base_link transform at or before t = 0.500 s"):
        tf.lookup("odom", "base_link", NS // 2)
    with pytest.raises(TransformError, match=r"1.000 s old \(more than 0.5 s\)"):
        tf.lookup("odom", "base_link", 3 * NS, max_age_s=0.5)
    with pytest.raises(TransformError, match=r"frame 'lidar' has not been received"):
        tf.lookup("odom", "lidar", 2 * NS)
    tf.set_transform("a", "b", 0, [0, 0, 0], UPRIGHT)
    with pytest.raises(TransformError, match=r"not connected"):
        tf.lookup("odom", "b", 2 * NS)


def test_history_is_bounded_by_the_cache():
    tf = TfBuffer(cache_s=1.0)
    for k in range(1000):  # 10 s at 100 Hz
        tf.set_transform("odom", "base_link", k * NS // 100, [k, 0, 0], UPRIGHT)
    assert len(tf._times["base_link"]) < 100 + 64 + 2
    with pytest.raises(TransformError):
        tf.lookup("odom", "base_link", 5 * NS)  # 5 s before the newest: forgotten
    assert tf.lookup("odom", "base_link", 999 * NS // 100)[0][0] == 999


# ------------------------------------------------------------------------------------------ DEMs
def _terrain_points(rng: np.random.Generator, n: int = 40000) -> np.ndarray:
    """Dense samples of the map-frame terrain: flat ground, and the step's top for x >= STEP_X."""
    xy = rng.uniform([-1.5, -1.0], [2.5, 1.0], size=(n, 2))
    z = np.where(xy[:, 0] >= STEP_X, STEP_H, 0.0)
    return np.column_stack([xy, z])


BASE_P = np.array([0.2, 0.05, 0.1])  # base_link in odom
BASE_YAW = 0.2
DRIFT = (np.array([0.3, -0.1, 0.0]), yaw_quat(0.1))  # map -> odom
MOUNT = np.array([0.1, 0.0, 0.4])  # base_link -> lidar


def _handler(**overrides) -> DemHandler:
    h = DemHandler(DemHandlerConfig(**overrides))
    h.on_tf(_tf_msg(0.0, [("base_link", "lidar", MOUNT, UPRIGHT)]), static=True)
    h.on_tf(_tf_msg(0.0, [("map", "odom", *DRIFT), ("odom", "base_link", BASE_P, yaw_quat(BASE_YAW))]))
    return h


def _base_in_map() -> tuple[np.ndarray, float]:
    return DRIFT[0] + quat_to_matrix(DRIFT[1]) @ BASE_P, BASE_YAW + 0.1


def _cloud_in_lidar(map_points: np.ndarray, t: float = 0.05, **kw):
    base_p, yaw = _base_in_map()
    lidar_p = base_p + quat_to_matrix(yaw_quat(yaw)) @ MOUNT
    local = (map_points - lidar_p) @ quat_to_matrix(yaw_quat(yaw))  # R^T (p - o) for each row
    return xyz_to_cloud(local, "lidar", T0 + t, dtype=np.float64, **kw)


def _step_cells(spec: DemSpec) -> np.ndarray:
    """(rows, cols) true for the cells that the step's edge crosses (their highest point is the step's)."""
    base_p, yaw = _base_in_map()
    xs, ys = spec.cell_centers()
    return np.abs(base_p[0] + math.cos(yaw) * xs - math.sin(yaw) * ys - STEP_X) < 0.08


def _expected_dem(spec: DemSpec) -> np.ndarray:
    """Cell heights of the analytic terrain around base_link in the map frame, relative to its z."""
    base_p, yaw = _base_in_map()
    xs, ys = spec.cell_centers()
    wx = base_p[0] + math.cos(yaw) * xs - math.sin(yaw) * ys
    return np.where(wx >= STEP_X, STEP_H, 0.0) - base_p[2]


def test_dem_matches_the_analytic_terrain_and_the_gridmap_round_trips():
    h = _handler(self_filter=False)
    result = h.on_cloud(_cloud_in_lidar(_terrain_points(np.random.default_rng(0))))
    spec = DemSpec()
    expected = _expected_dem(spec)
    base_p, yaw = _base_in_map()
    edge = _step_cells(spec)
    np.testing.assert_allclose(result.dem[~edge], expected[~edge], atol=1e-6)
    assert np.all(result.dem[edge] >= expected[edge] - 1e-6)  # the highest point of a cut cell
    np.testing.assert_allclose(result.position, base_p, atol=1e-12)
    dem, info = gridmap_to_dem(result.gridmap)
    np.testing.assert_array_equal(dem, result.dem)
    assert info["frame"] == "map" and result.gridmap.header.stamp == stamp(T0 + 0.05)
    np.testing.assert_allclose(info["center"], dem_center(tuple(base_p[:2]), yaw, spec), atol=1e-9)
    assert info["yaw"] == pytest.approx(yaw) and info["z"] == pytest.approx(base_p[2])


def test_odom_as_fixed_frame_gives_the_same_heights():
    a = _handler(self_filter=False).on_cloud(_cloud_in_lidar(_terrain_points(np.random.default_rng(1))))
    b = _handler(self_filter=False, fixed_frame="odom").on_cloud(_cloud_in_lidar(_terrain_points(np.random.default_rng(1))))
    np.testing.assert_allclose(a.dem, b.dem, atol=1e-5)
    assert b.gridmap.header.frame_id == "odom"


def test_point_map_fuses_clouds_unless_accumulation_is_off():
    pts = _terrain_points(np.random.default_rng(2))
    base_p, yaw = _base_in_map()
    lateral = -math.sin(yaw) * (pts[:, 0] - base_p[0]) + math.cos(yaw) * (pts[:, 1] - base_p[1])  # + is left
    right, left = pts[lateral < 0.0], pts[lateral >= 0.0]
    for accumulate in (True, False):
        h = _handler(self_filter=False, accumulate=accumulate)
        h.on_cloud(_cloud_in_lidar(right, t=0.01))
        dem = h.on_cloud(_cloud_in_lidar(left, t=0.02)).dem
        if accumulate:
            assert not np.isnan(dem).any()
        else:  # the right-hand columns were only in the first cloud
            assert np.isnan(dem[:, -1]).all() and not np.isnan(dem[:, 0]).any()


def test_self_filter_removes_flipper_returns_at_the_joint_angles():
    angles = np.array([0.6, 0.6, 0.0, 0.0])  # front flippers raised into the DEM's area ahead
    centers, axes, half = RobotBoxes(RobotSpec()).boxes(angles)
    rng = np.random.default_rng(6)
    on_flippers = []
    for k in (-4, -3):  # the front flippers' boxes (they follow the static ones, in FLIPPER_NAMES order)
        local = rng.uniform(-0.9, 0.9, size=(2000, 3)) * half[k]
        on_flippers.append(centers[k] + local @ axes[k])  # axes rows are the box axes in base_link
    on_flippers = np.concatenate(on_flippers)
    on_flippers = on_flippers[on_flippers[:, 0] > 0.4]  # ahead of the rigid body box (DemBuilder removes that)
    assert len(on_flippers) > 100
    base_p, yaw = _base_in_map()
    flipper_map = base_p + on_flippers @ quat_to_matrix(yaw_quat(yaw)).T
    cloud = lambda: _cloud_in_lidar(np.vstack([_terrain_points(np.random.default_rng(3)), flipper_map]))
    js = msg("sensor_msgs/msg/JointState")(header=msg("std_msgs/msg/Header")(stamp=stamp(T0), frame_id=""),
                                           name=["rear_left_joint", "front_left_joint", "front_right_joint",
                                                 "rear_right_joint", "track_joint"],
                                           position=np.array([0.0, 0.6, 0.6, 0.0, 9.0]), velocity=np.zeros(0),
                                           effort=np.zeros(0))
    wide = DemSpec(cols=8)  # the flippers run beside the tracks, outside the default DEM's 0.5 m width
    builder = DemBuilderConfig(dem=wide)
    raw = _handler(self_filter=False, builder=builder).on_cloud(cloud()).dem
    h = _handler(builder=builder)
    h.on_joint_states(js)
    np.testing.assert_allclose(h.flipper_angles, angles)
    filtered = h.on_cloud(cloud()).dem
    expected = _expected_dem(wide)
    plain = ~_step_cells(wide)
    assert np.nanmax((raw - expected)[plain]) > 0.1  # the flipper tops stand out of the ground...
    assert np.nanmax((filtered - expected)[plain]) < 1e-6  # ...until the self filter takes them out


# ------------------------------------------------------------------------------------------ bad input
def _no_z_cloud():
    cloud = xyz_to_cloud(np.zeros((5, 3)), "lidar", T0 + 0.05)
    cloud.fields = [f for f in cloud.fields if f.name != "z"]
    return cloud


@pytest.mark.parametrize("make, reason, words", [
    (_no_z_cloud, "malformed cloud", "missing field 'z'"),
    (lambda: xyz_to_cloud(np.full((4, 3), np.nan), "lidar", T0 + 0.05), "empty cloud", "all-NaN"),
    (lambda: xyz_to_cloud(np.zeros((0, 3)), "lidar", T0 + 0.05), "empty cloud", "empty"),
    (lambda: xyz_to_cloud(np.ones((5, 3)), "velodyne", T0 + 0.05), "missing transform", "frame 'velodyne'"),
    (lambda: xyz_to_cloud(np.ones((5, 3)), "lidar", T0 - 1.0), "missing transform", "at or before"),
    (lambda: xyz_to_cloud(np.ones((5, 3)), "lidar", T0 + 3.0), "missing transform", "old (more than 0.5 s)"),
])
def test_bad_clouds_are_skipped_with_a_warning_and_processing_goes_on(caplog, make, reason, words):
    h = _handler(self_filter=False)
    with caplog.at_level(logging.WARNING, logger="perception.dem_handler"):
        assert h.on_cloud(make()) is None
    assert h.skips == {reason: 1}
    assert words in caplog.text and reason in caplog.text
    good = h.on_cloud(_cloud_in_lidar(_terrain_points(np.random.default_rng(4))))
    assert good is not None and h.processed == 1


def test_an_empty_slice_after_earlier_returns_gives_the_dem_from_the_point_map(caplog):
    """A rotating lidar's slice facing the sky has no return: the DEM at the new pose comes from the map."""
    moved = BASE_P + np.array([0.3, 0.0, 0.0])
    for accumulate in (True, False):
        h = _handler(self_filter=False, accumulate=accumulate)
        first = h.on_cloud(_cloud_in_lidar(_terrain_points(np.random.default_rng(7))))
        h.on_tf(_tf_msg(0.1, [("odom", "base_link", moved, yaw_quat(BASE_YAW))]))
        with caplog.at_level(logging.WARNING, logger="perception.dem_handler"):
            caplog.clear()
            out = h.on_cloud(xyz_to_cloud(np.zeros((0, 3)), "lidar", T0 + 0.15))
        if not accumulate:  # nothing to build from: skipped as bad input
            assert out is None and h.skips == {"empty cloud": 1} and "empty cloud" in caplog.text
            continue
        assert out is not None and not h.skips and not caplog.text and h.from_map_only == 1 and h.processed == 2
        base_p = DRIFT[0] + quat_to_matrix(DRIFT[1]) @ moved
        np.testing.assert_allclose(out.position, base_p, atol=1e-12)
        spec, yaw = DemSpec(), BASE_YAW + 0.1
        xs, ys = spec.cell_centers()
        wx = base_p[0] + math.cos(yaw) * xs - math.sin(yaw) * ys
        expected = np.where(wx >= STEP_X, STEP_H, 0.0) - base_p[2]
        known = np.isfinite(out.dem) & (np.abs(wx - STEP_X) > 0.08)
        assert known.sum() > 0.5 * known.size  # most of the DEM lies inside the terrain fused before
        np.testing.assert_allclose(out.dem[known], expected[known], atol=1e-6)  # the map's heights at the new pose
        assert not np.array_equal(out.dem, first.dem, equal_nan=True)


def test_cloud_before_any_transform_is_skipped():
    h = DemHandler(DemHandlerConfig(self_filter=False))
    assert h.on_cloud(xyz_to_cloud(np.ones((3, 3)), "lidar", T0)) is None
    assert h.skips["missing transform"] == 1


def test_cdr_entry_points_round_trip_and_skip_garbage(caplog):
    h = _handler(self_filter=False)
    cloud = _cloud_in_lidar(_terrain_points(np.random.default_rng(5)))
    out = h.on_cloud_cdr(bytes(typestore().serialize_cdr(cloud, "sensor_msgs/msg/PointCloud2")))
    dem, _ = gridmap_to_dem(typestore().deserialize_cdr(out, "grid_map_msgs/msg/GridMap"))
    expected = _handler(self_filter=False).on_cloud(cloud).dem
    np.testing.assert_array_equal(dem, expected)
    with caplog.at_level(logging.WARNING):
        assert h.on_cloud_cdr(b"\x00\x01\x00\x00garbage") is None
    assert h.skips["undecodable message"] == 1 and "does not deserialise" in caplog.text
    h.on_tf(_tf_msg(0.1, [("odom", "base_link", [math.nan, 0, 0], UPRIGHT)]))  # a bad transform: skipped too
    assert h.skips["bad transform"] == 1


def test_config_is_validated():
    with pytest.raises(ValueError, match="two different frame names"):
        DemHandlerConfig(fixed_frame="base_link")
    with pytest.raises(ValueError, match="tf_max_age"):
        DemHandlerConfig(tf_max_age=0.0)


# ------------------------------------------------------------------------------------------ the node
def test_node_imports_without_rclpy_and_its_defaults_are_the_handlers():
    sys.modules.pop("perception.dem_node", None)
    node = importlib.import_module("perception.dem_node")
    assert "rclpy" not in sys.modules
    assert node.handler_config(node.DemNodeConfig()) == DemHandlerConfig()
    from perception.ros_adapter import param_specs

    specs = {s.name: s for s in param_specs(node.DemNodeConfig, node.PARAM_INFO)}
    assert set(node.PARAM_INFO) == set(specs)  # every parameter described, no stale description
    assert all(s.info.description for s in specs.values())
    assert specs["tf_max_age"].default == DemHandlerConfig().tf_max_age
    assert node.STATIC_PARAMS["points_topic"][0] == "/points" and node.STATIC_PARAMS["elevation_map_topic"][0] == "/elevation_map"


# ------------------------------------------------------------------------------------------ hostile input
def _static_handler() -> DemHandler:
    h = DemHandler()  # static transforms never age: every stamp finds them
    for parent, child, p in (("map", "odom", (0, 0, 0)), ("odom", "base_link", (0, 0, 0)), ("base_link", "lidar", (0, 0, 0.3))):
        h.tf.set_transform(parent, child, 0, p, UPRIGHT, static=True)
    return h


def test_a_cloud_with_an_impossible_stamp_is_skipped_not_raised():
    h = _static_handler()
    cloud = xyz_to_cloud(np.array([[1.0, 0.0, -0.3], [1.2, 0.1, -0.3]], np.float32), "lidar", 1.0)
    cloud.header.stamp.sec = -5
    assert h.on_cloud(cloud) is None
    assert h.skips["malformed cloud"] == 1


def test_random_clouds_and_bytes_never_raise_and_every_cloud_is_accounted_for():
    """Seeded fuzzing of what a broken driver or a hostile publisher could send (the node must keep running)."""
    rng = np.random.default_rng(7)
    h = _static_handler()
    good = xyz_to_cloud(rng.normal(0, 2, (200, 3)).astype(np.float32), "lidar", 1.0)
    cloud_type, field_type = type(good), msg("sensor_msgs/msg/PointField")
    n = 300
    for i in range(n):
        kind = i % 4
        if kind == 0:  # random data bytes under a valid header
            c = cloud_type(**{**good.__dict__, "data": rng.integers(0, 256, int(rng.integers(0, 6000)), dtype=np.uint8)})
        elif kind == 1:  # absurd dimensions
            c = cloud_type(**{**good.__dict__, "height": int(rng.integers(0, 4)), "width": int(rng.integers(0, 2**31)),
                              "point_step": int(rng.integers(0, 2**31)), "row_step": int(rng.integers(0, 2**32))})
        elif kind == 2:  # random fields
            fields = [field_type(name=str(rng.choice(["x", "y", "z", "i"])), offset=int(rng.integers(0, 2**32)),
                                 datatype=int(rng.integers(0, 12)), count=int(rng.integers(0, 2**32))) for _ in range(3)]
            c = cloud_type(**{**good.__dict__, "fields": fields})
        else:  # random CDR bytes, as the rclpy adapter hands them over
            assert h.on_cloud_cdr(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()) is None
            continue
        h.on_cloud(c)
    assert h.processed + sum(h.skips.values()) == n
