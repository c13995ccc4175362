"""The rotating lidar: ray-cast ranges against analytic geometry, coverage, self hits, noise, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.lidar import LidarConfig, RotatingLidar, Scan, solid_rotation
from sim.robot import RobotSpec
from sim.robot_boxes import RobotBoxes, ray_box_distance
from sim.terrain import world_solids
from sim.world import world_from_dict

EXACT = LidarConfig(range_sigma=0.0, dropout=0.0, self_hits=False)
UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])


def _world(terrain: list[dict]):
    return world_from_dict({"name": "t", "length": 3.0, "terrain": terrain})


def _still(pos, quat=UPRIGHT, flippers=(0.0, 0.0, 0.0, 0.0)):
    pos, quat, flippers = np.asarray(pos, float), np.asarray(quat, float), np.asarray(flippers, float)
    return lambda t: (pos, quat, flippers)


def _lidar(terrain=(), config=EXACT, seed=0):
    return RotatingLidar(world_solids(_world(list(terrain))), config, np.random.default_rng(seed))


def test_ray_box_distance_by_hand():
    centers, axes, half = np.array([[2.0, 0.0, 0.0]]), np.eye(3)[None], np.array([[0.5, 0.2, 0.2]])
    dirs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [math.cos(0.05), math.sin(0.05), 0.0]])
    t = ray_box_distance(np.zeros(3), dirs, centers, axes, half)
    assert t[0] == pytest.approx(1.5)
    assert np.isinf(t[1]) and np.isinf(t[2])
    assert t[3] == pytest.approx(1.5 / math.cos(0.05))


def test_flat_ground_ranges_are_exact():
    lidar = _lidar()
    pose = np.array([0.3, -0.2, 0.5])
    scan = lidar.scan(0.0, 0.5, _still(pose))
    assert len(scan) > 1000
    assert np.abs(scan.world_points[:, 2]).max() < 1e-4  # every return lies on the ground
    origin = pose + lidar.mount
    dirs = (scan.world_points - origin) / np.linalg.norm(scan.world_points - origin, axis=1)[:, None]
    analytic = origin[2] / -dirs[:, 2]  # range to z = 0 along each ray
    np.testing.assert_allclose(np.linalg.norm(scan.world_points - origin, axis=1), analytic, atol=1e-4)
    # every downward ray within range returns (no noise, no dropout): nothing is lost or invented
    lines = lidar.line_times(0.0, 0.5)
    down = np.concatenate([lidar.directions(int(k))[:, 2] for k in lines])
    assert len(scan) == int(np.sum((down < 0) & (origin[2] / -np.minimum(down, -1e-12) <= EXACT.max_range)))


def test_boxes_ramps_and_yaw_match_analytic_slab_tests():
    terrain = [{"type": "box", "position": [1.0, 0.2], "size": [0.6, 0.5, 0.3], "yaw": 0.4},
               {"type": "ramp", "position": [-2.0, 0.0], "length": 1.0, "height": 0.3, "width": 1.0},
               {"type": "stairs", "position": [0.0, -1.5], "direction": "up", "steps": 3, "rise": 0.15,
                "run": 0.3, "width": 1.0}]
    lidar = _lidar(terrain)
    solids = world_solids(_world(terrain))
    centers = np.array([s.center for s in solids])
    axes = np.stack([solid_rotation(s).T for s in solids])  # rows = box axes in the world
    half = np.array([s.half for s in solids])
    pos = np.array([0.0, 0.0, 0.4])
    origin = pos + lidar.mount
    box_hits = 0
    for k in lidar.line_times(0.0, 3.0)[::7]:
        dirs = lidar.directions(int(k))
        box_t = ray_box_distance(origin, dirs, centers, axes, half)
        ground_t = np.where(dirs[:, 2] < 0, origin[2] / -np.minimum(dirs[:, 2], -1e-12), np.inf)
        expected = np.minimum(box_t, ground_t)
        box_hits += int(np.sum(box_t < np.minimum(ground_t, EXACT.max_range)))
        scan = lidar.scan(k / 50.0, (k + 0.5) / 50.0, _still(pos))
        measured = np.full(len(dirs), np.inf)
        ranges = np.linalg.norm(scan.points - lidar.mount, axis=1)
        beam = np.argmax((scan.points - lidar.mount) @ dirs.T / ranges[:, None], axis=1)
        measured[beam] = ranges
        seen = expected <= EXACT.max_range
        np.testing.assert_array_equal(np.isfinite(measured), seen)
        np.testing.assert_allclose(measured[seen], expected[seen], atol=2e-4)
    assert box_hits > 100  # the boxes were really hit, not just the ground


def test_one_period_covers_the_sphere_and_half_does_not():
    lidar = _lidar()
    rng = np.random.default_rng(3)
    probe = rng.standard_normal((300, 3))
    probe /= np.linalg.norm(probe, axis=1)[:, None]

    def worst_gap(t1):
        dirs = np.concatenate([lidar.directions(int(k)) for k in lidar.line_times(0.0, t1)])
        return math.degrees(math.acos(min(1.0, (probe @ dirs.T).max(axis=1).min())))

    # lines are 2.4 degrees apart (150 per turn) and beams 0.5: every direction is within ~1.3 degrees
    assert worst_gap(EXACT.period) < 1.5
    assert worst_gap(EXACT.period / 2) > 30.0


def test_ground_seen_all_around_in_one_period():
    scan = _lidar().scan(0.0, EXACT.period, _still([0.0, 0.0, 0.3]))
    azimuth = np.degrees(np.arctan2(scan.points[:, 1], scan.points[:, 0]))
    far = np.hypot(scan.points[:, 0], scan.points[:, 1]) > 0.5
    counts, _ = np.histogram(azimuth[far], bins=36, range=(-180, 180))
    assert counts.min() > 20


def test_consecutive_intervals_partition_the_lines():
    lidar = _lidar()
    parts = [lidar.scan(a, b, _still([0.0, 0.0, 0.3])) for a, b in ((0.0, 0.13), (0.13, 0.5), (0.5, 1.0))]
    whole = lidar.scan(0.0, 1.0, _still([0.0, 0.0, 0.3]))
    joined = Scan.concatenate(parts)
    np.testing.assert_array_equal(joined.line, whole.line)
    np.testing.assert_allclose(joined.points, whole.points)
    assert np.all((parts[1].stamps >= 0.13) & (parts[1].stamps < 0.5))
    np.testing.assert_array_equal(lidar.line_times(0.0, 1.0), np.arange(50))  # 50 lines per second


def test_moving_robot_points_are_in_base_link_at_their_own_stamp():
    lidar = _lidar()

    def moving(t):  # 1 m/s along x and turning: each line sees the ground from another pose
        yaw = 0.5 * t
        return np.array([t, 0.0, 0.3]), np.array([math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]), np.zeros(4)

    scan = lidar.scan(0.0, 1.0, moving)
    assert np.abs(scan.world_points[:, 2]).max() < 1e-4  # cast from the pose at each line's time
    for i in range(0, len(scan), 997):
        pos, quat, _ = moving(scan.stamps[i])
        yaw = 2 * math.atan2(quat[3], quat[0])
        c, s = math.cos(yaw), math.sin(yaw)
        p = scan.points[i]
        np.testing.assert_allclose(pos + [c * p[0] - s * p[1], s * p[0] + c * p[1], p[2]], scan.world_points[i], atol=1e-9)


def test_self_hits_are_on_the_robot_and_exist_only_when_enabled():
    config = LidarConfig(range_sigma=0.0, dropout=0.0)
    raised = (1.0, 1.0, 1.0, 1.0)
    scan = _lidar(config=config).scan(0.0, 3.0, _still([0.0, 0.0, 0.089], flippers=raised))
    body = RobotBoxes(RobotSpec())
    assert scan.self_hit.sum() > 200
    inside = body.contains(scan.points, np.array(raised), margin=1e-6)
    np.testing.assert_array_equal(inside, scan.self_hit)
    # flipper returns: above the track plane ahead of the front pivots
    assert np.any(scan.self_hit & (scan.points[:, 0] > 0.3) & (scan.points[:, 2] > 0.1))
    assert not _lidar().scan(0.0, 3.0, _still([0.0, 0.0, 0.089], flippers=raised)).self_hit.any()


def test_noise_and_dropouts_follow_the_config_and_the_seed():
    noisy = LidarConfig(range_sigma=0.02, dropout=0.1, self_hits=False)
    pose = _still([0.0, 0.0, 0.5])
    exact = _lidar().scan(0.0, 1.0, pose)
    scan = _lidar(config=noisy, seed=7).scan(0.0, 1.0, pose)
    assert len(scan) / len(exact) == pytest.approx(0.9, abs=0.02)
    origin = np.array([0.0, 0.0, 0.5]) + _lidar().mount
    ranges = np.linalg.norm(scan.world_points - origin, axis=1)
    down = (scan.world_points[:, 2] - origin[2]) / ranges  # the ray's direction is unchanged by range noise
    residual = ranges - origin[2] / -down
    assert np.std(residual) == pytest.approx(0.02, rel=0.1)
    again = _lidar(config=noisy, seed=7).scan(0.0, 1.0, pose)
    np.testing.assert_array_equal(again.points, scan.points)
    other = _lidar(config=noisy, seed=8).scan(0.0, 1.0, pose)
    assert len(other) != len(scan) or not np.array_equal(other.points, scan.points)


def test_range_limits_drop_returns():
    short = LidarConfig(range_sigma=0.0, dropout=0.0, self_hits=False, max_range=1.0)
    scan = _lidar(config=short).scan(0.0, 3.0, _still([0.0, 0.0, 0.3]))
    ranges = np.linalg.norm(scan.points - _lidar().mount, axis=1)
    assert ranges.max() <= 1.0 and ranges.min() >= short.min_range
    assert np.hypot(scan.world_points[:, 0], scan.world_points[:, 1]).max() < 1.0


@pytest.mark.parametrize("bad", [{"period": 0.0}, {"fov": 7.0}, {"dropout": 1.0}, {"min_range": 5.0, "max_range": 2.0},
                                 {"range_sigma": -0.1}])
def test_bad_config_is_rejected_with_the_field_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        LidarConfig(**bad)


def test_lidar_needs_a_seeded_generator():
    with pytest.raises(ValueError, match="Generator"):
        RotatingLidar([], EXACT, None)


def test_solid_rotations_match_their_mujoco_orientation():
    yawed, ramp = world_solids(_world([{"type": "box", "position": [0.0, 0.0], "size": [1.0, 1.0, 0.2], "yaw": 0.3},
                                       {"type": "ramp", "position": [2.0, 0.0], "length": 1.0, "height": 0.5}]))[:2]
    np.testing.assert_allclose(solid_rotation(yawed) @ [1, 0, 0], [math.cos(0.3), math.sin(0.3), 0], atol=1e-12)
    theta = math.atan2(0.5, 1.0)  # the ramp's slab rises along +x
    np.testing.assert_allclose(solid_rotation(ramp) @ [1, 0, 0], [math.cos(theta), 0, math.sin(theta)], atol=1e-12)
