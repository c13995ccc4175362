"""The reality proxy: seeded odometry drift, flipper lag, the DEM from ray-cast points, snapshots, a full run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flipper_control.controllers import make_controller
from sim.lidar import LidarConfig
from sim.odometry import OdometryConfig, OdometryDrift
from sim.reality_config import ProxyDynamics, RealityProxyConfig
from sim.reality_proxy import FlipperLag, RealityProxy
from sim.rollout import Trace, run_episode
from sim.rotations import quat_to_matrix, yaw_quat
from sim.safety import euler_from_quat
from sim.simulator import SUCCESS, Simulator
from sim.world import world_from_dict
from sim.world_sets import resolve_world

UPRIGHT = np.array([1.0, 0.0, 0.0, 0.0])
DROP = world_from_dict({"name": "drop", "length": 3.0,
                        "terrain": [{"type": "step", "position": [0.8, 0.0], "height": -0.3, "width": 2.0}]})
FLAT = world_from_dict({"name": "flat", "length": 3.0, "terrain": []})


# ------------------------------------------------------------------------------------------ odometry
def _drive(odo: OdometryDrift, distance: float, step: float = 0.05) -> list[np.ndarray]:
    """Drive along a gentle curve; returns the drift (dx, dy, dz, dyaw) after each metre."""
    out = []
    for i in range(1, int(round(distance / step)) + 1):
        s = i * step
        pos = np.array([s, 0.1 * math.sin(s), 0.0])
        est_pos, est_quat = odo.estimate(pos, UPRIGHT)
        if abs(s - round(s)) < 1e-9:
            out.append(odo.drift(pos))
    return out


def test_drift_is_seeded():
    a = _drive(OdometryDrift(OdometryConfig(), np.random.default_rng(5)), 3.0)
    b = _drive(OdometryDrift(OdometryConfig(), np.random.default_rng(5)), 3.0)
    c = _drive(OdometryDrift(OdometryConfig(), np.random.default_rng(6)), 3.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    off = _drive(OdometryDrift(OdometryConfig(enabled=False), np.random.default_rng(5)), 3.0)
    np.testing.assert_array_equal(off, np.zeros((3, 4)))


def test_drift_grows_like_a_random_walk_in_distance():
    config = OdometryConfig(scale=0.0)
    runs = np.array([_drive(OdometryDrift(config, np.random.default_rng(s)), 4.0) for s in range(150)])
    yaw_std = runs[:, :, 3].std(axis=0)  # after 1, 2, 3, 4 m
    np.testing.assert_allclose(yaw_std, config.yaw_sigma * np.sqrt([1, 2, 3, 4]), rtol=0.2)
    z_std = runs[:, :, 2].std(axis=0)
    np.testing.assert_allclose(z_std, config.z_sigma * np.sqrt([1, 2, 3, 4]), rtol=0.2)
    xy = np.hypot(runs[:, :, 0], runs[:, :, 1])
    assert np.sqrt((xy[:, 3] ** 2).mean()) > 1.6 * np.sqrt((xy[:, 0] ** 2).mean())


def test_scale_error_stretches_the_estimated_path():
    odo = OdometryDrift(OdometryConfig(xy_sigma=0, z_sigma=0, yaw_sigma=0, scale=0.05), np.random.default_rng(1))
    _drive(odo, 2.0)
    est, _ = odo.estimate(np.array([2.0, 0.1 * math.sin(2.0), 0.0]), UPRIGHT)
    assert est[0] - 2.0 == pytest.approx(odo.scale_error * 2.0, abs=0.01)
    assert 0 < abs(odo.scale_error) <= 0.05


def test_estimate_is_map_to_odom_applied_to_the_truth():
    odo = OdometryDrift(OdometryConfig(yaw_sigma=0.1), np.random.default_rng(2))
    _drive(odo, 2.0)
    true_pos, true_quat = np.array([2.05, 0.3, 0.1]), yaw_quat(0.2)
    est_pos, est_quat = odo.estimate(true_pos, true_quat)
    t, q = odo.map_to_odom()
    np.testing.assert_allclose(est_pos, quat_to_matrix(q) @ true_pos + t, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(est_quat), quat_to_matrix(q) @ quat_to_matrix(true_quat), atol=1e-12)
    roll, pitch, _ = euler_from_quat(est_quat)
    assert roll == pytest.approx(0.0, abs=1e-12) and pitch == pytest.approx(0.0, abs=1e-12)  # gravity is not drifted


# ------------------------------------------------------------------------------------------ flipper lag
def test_flipper_lag_delays_then_smooths_the_command():
    lag = FlipperLag(delay=0.04, tau=0.1)
    lag.reset(np.zeros(4))
    lag.command(0.0, np.ones(4))
    out = [lag.advance(k * 0.02, 0.02)[0] for k in range(6)]
    assert out[:2] == [0.0, 0.0]  # still the old command for the dead time
    alpha = 1 - math.exp(-0.2)
    np.testing.assert_allclose(out[2:], [1 - (1 - alpha) ** n for n in range(1, 5)])


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="delay"):
        ProxyDynamics(delay=(0.2, 0.1))
    with pytest.raises(ValueError, match="yaw_sigma"):
        OdometryConfig(yaw_sigma=-1.0)
    with pytest.raises(ValueError, match="substep"):
        RealityProxyConfig(substep=0.0)


# ------------------------------------------------------------------------------------------ the proxy
def _exact_dem(proxy: RealityProxy) -> np.ndarray:
    pos, quat = proxy.pose()
    return proxy.sim.dem_extractor.extract(pos[0], pos[1], pos[2], euler_from_quat(quat)[2])


def _interior(dem: np.ndarray) -> np.ndarray:
    """Cells whose exact height equals that of their four neighbours (not cut by an edge)."""
    pad = np.pad(dem, 1, mode="edge")
    return np.all([np.isclose(pad[1 + di:pad.shape[0] - 1 + di, 1 + dj:pad.shape[1] - 1 + dj], dem, atol=1e-6)
                   for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))], axis=0)


def test_proxy_is_a_simulator():
    assert issubclass(RealityProxy, Simulator)


def test_dem_has_nan_behind_a_drop_and_matches_the_exact_dem_where_seen():
    proxy = RealityProxy(config=RealityProxyConfig.ideal())
    obs = proxy.reset(DROP, seed=0)
    exact = _exact_dem(proxy)
    # the lidar (about 0.48 m above the platform) cannot see the lower ground from the edge at 0.8 m
    # to about 1.2 m ahead: rows 1-3 (0.9-1.2 m ahead) lie wholly in that shadow
    assert np.isnan(obs.dem[1:4]).all()
    seen = np.isfinite(obs.dem)
    assert seen.sum() >= 30
    check = seen & _interior(exact)
    assert check.sum() >= 25
    np.testing.assert_allclose(obs.dem[check], exact[check], atol=0.03)
    for _ in range(10):  # driving towards the edge shrinks the shadow; seen cells still match
        obs = proxy.step(np.zeros(4), 0.1)
    exact = _exact_dem(proxy)
    check = np.isfinite(obs.dem) & _interior(exact)
    np.testing.assert_allclose(obs.dem[check], exact[check], atol=0.03)
    assert np.isfinite(obs.dem[1:4]).sum() > 0


def test_dem_is_nan_beyond_the_lidar_range():
    config = RealityProxyConfig.ideal(lidar=LidarConfig(range_sigma=0.0, dropout=0.0, max_range=1.0))
    obs = RealityProxy(config=config).reset(FLAT, seed=0)
    # the lidar sits ~0.48 m above the ground at x = 0.1: ground beyond ~0.98 m from it is out of range
    assert np.isnan(obs.dem[:2]).all()
    assert np.isfinite(obs.dem[5:8]).all()


def test_self_hits_are_in_the_raw_scan_but_not_in_the_dem():
    proxy = RealityProxy(config=RealityProxyConfig.ideal())
    obs = proxy.reset(FLAT, seed=0, flippers=np.full(4, 1.0))
    scan = proxy.warmup_scan
    assert scan.self_hit.sum() > 200
    assert scan.points[scan.self_hit, 2].max() > 0.1  # chassis, mast and raised flippers
    exact = _exact_dem(proxy)
    seen = np.isfinite(obs.dem)
    assert seen.sum() >= 30
    np.testing.assert_allclose(obs.dem[seen], exact[seen], atol=0.03)  # the ground only, no robot
    # nor does any fused point lie on the robot (it would haunt the map once the robot moves on)
    pos, quat = proxy.pose()
    local = (proxy.point_map.points() - pos) @ quat_to_matrix(quat)
    assert not proxy.lidar.body.contains(local, obs.flipper_angles, margin=0.0).any()


def test_same_seed_same_run_other_seed_other_drift():
    def run(seed):
        proxy = RealityProxy(config=RealityProxyConfig(lidar=LidarConfig(period=1.0)))
        proxy.reset(FLAT, seed=seed)
        for _ in range(15):
            obs = proxy.step(np.full(4, 0.3), 0.1)
        return obs, proxy.estimated_pose()[0] - proxy.pose()[0]

    (a, drift_a), (b, drift_b), (_, drift_c) = run(3), run(3), run(4)
    np.testing.assert_array_equal(a.dem, b.dem)
    np.testing.assert_array_equal(drift_a, drift_b)
    assert np.linalg.norm(drift_a) > 0 and not np.allclose(drift_a, drift_c)


def test_raw_step_data_for_a_recorder():
    proxy = RealityProxy(config=RealityProxyConfig.ideal())
    proxy.reset(FLAT, seed=0)
    for _ in range(5):
        proxy.step(np.zeros(4), 0.1)
    t0 = proxy.time
    proxy.step(np.full(4, 0.5), 0.1)
    raw = proxy.last_step
    assert len(raw.samples) == 5  # one per 0.02 s substep
    assert raw.samples[-1].time == pytest.approx(proxy.time)
    assert np.all((raw.scan.stamps >= t0 - 1e-9) & (raw.scan.stamps < proxy.time))
    assert np.unique(raw.scan.line).size == 5  # 50 lines/s
    np.testing.assert_array_equal(raw.flipper_commands, np.full(4, 0.5))
    assert raw.cmd_vel == (FLAT.speed, 0.0)
    acc = np.mean([s.linear_acceleration for s in raw.samples], axis=0)
    assert acc[2] == pytest.approx(9.81, abs=1.0) and abs(acc[0]) < 1.5  # driving level at constant speed
    assert np.linalg.norm(raw.samples[-1].angular_velocity) < 0.5
    assert raw.samples[-1].servo_targets[0] > 0  # no delay in the ideal proxy: the servos follow at once


def test_snapshot_restores_the_run_exactly():
    proxy = RealityProxy(config=RealityProxyConfig(lidar=LidarConfig(period=1.0)))
    proxy.reset(DROP, seed=1)
    for _ in range(5):
        proxy.step(np.full(4, 0.2), 0.1)
    snap = proxy.get_state()
    first = [proxy.step(np.full(4, 0.4), 0.1) for _ in range(4)]
    proxy.step(np.full(4, -0.3), 0.1)  # wander off, then come back
    proxy.set_state(snap)
    again = [proxy.step(np.full(4, 0.4), 0.1) for _ in range(4)]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.dem, b.dem)
        assert (a.pitch, a.progress) == (b.pitch, b.progress)
        np.testing.assert_array_equal(a.flipper_angles, b.flipper_angles)


def test_point_map_stays_within_its_bound():
    proxy = RealityProxy(config=RealityProxyConfig(map_max_bytes=200_000, lidar=LidarConfig(period=1.0)))
    proxy.reset(FLAT, seed=0)
    for _ in range(20):
        proxy.step(np.zeros(4), 0.1)
    assert 0 < proxy.point_map.nbytes <= 200_000


def test_heuristic_controller_succeeds_on_the_proxy_flat_course():
    proxy = RealityProxy()
    trace = Trace()
    result = run_episode(proxy, resolve_world("proxy/F"), make_controller("heuristic"), seed=0, trace=trace)
    assert proxy.status == SUCCESS, result
    first = trace.observations[0].dem
    assert np.isnan(first).any()  # under the robot at the start: never seen
    # flat ground, yet the DEMs carry range noise and drift, unlike the exact one (the same value everywhere)
    assert np.median([np.nanstd(o.dem) for o in trace.observations]) > 0.002


def test_a_lead_in_shows_the_ground_behind_the_start_and_only_the_ground():
    fresh = RealityProxy(config=RealityProxyConfig.ideal()).reset(FLAT, seed=0).dem
    proxy = RealityProxy(config=RealityProxyConfig.ideal(lead_in=2.0))
    obs = proxy.reset(FLAT, seed=0)
    rear = slice(14, 20)  # the rows behind base_link, which a robot switched on at the start has barely seen
    assert np.isnan(fresh[rear]).mean() > 0.7 and np.isnan(obs.dem[rear]).mean() < 0.3
    seen = np.isfinite(obs.dem)
    np.testing.assert_allclose(obs.dem[seen], _exact_dem(proxy)[seen], atol=0.03)
    assert proxy.time == 0.0 and proxy.pose()[0][0] == pytest.approx(FLAT.start_x, abs=0.05)  # the run itself starts here
    # the recorded start cloud is in base_link at the start pose, and the robot's own returns are not in it
    pos, quat = proxy.pose()
    cloud = proxy.warmup_scan
    np.testing.assert_allclose(cloud.points @ quat_to_matrix(quat).T + pos, cloud.world_points, atol=1e-9)
    lead = cloud.stamps < -proxy.config.lidar.period
    assert lead.sum() > 1000 and cloud.points[lead, 0].min() < -1.0  # lines cast from up to 2 m behind
    assert not proxy.lidar.body.contains(cloud.points[lead], obs.flipper_angles, margin=0.0).any()


@pytest.mark.parametrize("value", [-0.5, 11.0, float("nan"), "far"])
def test_an_impossible_lead_in_is_refused(value):
    with pytest.raises(ValueError, match="lead_in must be (in|a number)"):
        RealityProxyConfig.from_dict({"lead_in": value})
