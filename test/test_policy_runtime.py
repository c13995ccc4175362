"""The pure core of policy_node (``flipper_control.policy_runtime``): the decision replay makes, joint and rate limits,
the watchdog, an all-NaN DEM, a failing policy, checkpoint hot swap, config validation. No ROS: messages are the
rosbags typestore dataclasses the node decodes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flipper_control.checkpoint import save_policy
from flipper_control.policy import NanAwarePolicy, PolicyConfig
from flipper_control.policy_node_config import JOINT_NAMES, PolicyNodeConfig, flipper_angles, pitch_roll
from flipper_control.policy_runtime import PolicyRuntime
from perception.gridmap import dem_to_gridmap
from perception.messages import header, msg
from sim.dem import DemSpec
from sim.rotations import quat_from_euler

SPEC = DemSpec()
SLOW = dict(gridmap_timeout=60.0, imu_timeout=60.0, joint_states_timeout=60.0)  # no watchdog unless a test wants it


def _policy(seed: int, config: PolicyConfig | None = None) -> NanAwarePolicy:
    torch.manual_seed(seed)
    return NanAwarePolicy(config or PolicyConfig()).eval()


def _imu(t: float, pitch: float = 0.1, roll: float = -0.05, q=None):
    q = quat_from_euler(roll, pitch, 0.3) if q is None else q
    quat = msg("geometry_msgs/msg/Quaternion")(w=float(q[0]), x=float(q[1]), y=float(q[2]), z=float(q[3]))
    v = msg("geometry_msgs/msg/Vector3")(x=0.0, y=0.0, z=0.0)
    return msg("sensor_msgs/msg/Imu")(header=header("imu", t), orientation=quat, orientation_covariance=np.zeros(9),
                                      angular_velocity=v, angular_velocity_covariance=np.zeros(9),
                                      linear_acceleration=v, linear_acceleration_covariance=np.zeros(9))


def _joints(t: float, angles=(0.2, 0.2, -0.1, -0.1), names=JOINT_NAMES):
    return msg("sensor_msgs/msg/JointState")(header=header("", t), name=list(names),
                                             position=np.asarray(angles, dtype=float), velocity=np.zeros(0),
                                             effort=np.zeros(0))


def _dem(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dem = rng.normal(0.0, 0.2, SPEC.shape).astype(np.float32)
    dem[:3] = np.nan
    return dem


def _gridmap(t: float, dem: np.ndarray):
    return dem_to_gridmap(dem, SPEC.resolution, (0.0, 0.0), "map", t)


def _feed(rt: PolicyRuntime, t: float, now: float, dem=None, pitch=0.1, angles=(0.2, 0.2, -0.1, -0.1)):
    rt.on_imu(_imu(t, pitch=pitch), now)
    rt.on_joint_states(_joints(t, angles), now)
    return rt.on_gridmap(_gridmap(t, _dem() if dem is None else dem), now)


def test_decision_is_replays_and_uses_the_state_at_the_dem_stamp():
    policy = _policy(0)
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, **SLOW), policy=policy)
    rt.on_imu(_imu(10.0, pitch=0.1, roll=-0.05), 0.0)
    rt.on_joint_states(_joints(10.0, (0.2, 0.3, -0.1, 0.0)), 0.0)
    # newer state that overtook the DEM: must not be used for the DEM stamped 10.0
    rt.on_imu(_imu(10.05, pitch=0.4, roll=0.2), 0.01)
    rt.on_joint_states(_joints(10.05, (1.0, 1.0, 1.0, 1.0)), 0.01)
    cmd = rt.on_gridmap(_gridmap(10.0, _dem()), 0.02)
    expected = policy.act_numpy(_dem(), np.array([0.1, -0.05, 0.2, 0.3, -0.1, 0.0], dtype=np.float32))
    assert cmd.source == "policy"
    np.testing.assert_allclose(cmd.positions, expected, atol=1e-6)
    newer = policy.act_numpy(_dem(), np.array([0.4, 0.2, 1.0, 1.0, 1.0, 1.0], dtype=np.float32))
    assert not np.allclose(cmd.positions, newer, atol=1e-4)
    rt.on_imu(_imu(10.1, pitch=float("nan"), roll=0.0), 0.03)  # dropped: not a reading
    values = rt.status(0.03)[2]  # the readings taken, for comparison with what was sent (a lossy link shows)
    assert (values["imu readings"], values["joint_states readings"], values["dropped imu"]) == ("2", "2", "1")


def test_commands_are_in_the_controllers_joint_order():
    order = (JOINT_NAMES[3], JOINT_NAMES[0], JOINT_NAMES[2], JOINT_NAMES[1])
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, controller_joints=order, **SLOW), policy=_policy(0))
    ref = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, **SLOW), policy=rt.policy)
    a, b = _feed(rt, 1.0, 0.0), _feed(ref, 1.0, 0.0)
    np.testing.assert_array_equal(a.positions, b.positions[[3, 0, 2, 1]])


def test_joint_limits_and_rate_limit():
    cfg = PolicyNodeConfig(max_rate=1.0, rate_hz=10.0, joint_lower=-0.3, joint_upper=0.3, safe_posture=(0.25,) * 4, **SLOW)
    rt = PolicyRuntime(cfg, policy=_policy(0))
    # first command: from the measured angles (all 0.0), at most 0.1 rad per 0.1 s towards the clamped target
    rt.on_imu(_imu(1.0), 0.0)
    rt.on_joint_states(_joints(1.0, (0.0, 0.0, 0.0, 0.0)), 0.0)
    rt._command(np.array([2.0, -2.0, 0.05, 0.3]), 0.0, "policy")
    np.testing.assert_allclose(rt._last, [0.1, -0.1, 0.05, 0.1])
    # the timer keeps approaching the target, 0.05 s -> 0.05 rad, and stops at the clamped target (0.3 / -0.3)
    steps = [rt.tick(0.05 * k).positions.copy() for k in range(1, 5)]
    np.testing.assert_allclose(steps[0], [0.15, -0.15, 0.05, 0.15])
    np.testing.assert_allclose(steps[-1], [0.3, -0.3, 0.05, 0.3])
    assert rt.tick(0.25) is None  # reached: nothing more to publish
    # a long pause does not allow a jump larger than one timer period's worth
    out = rt._command(np.array([-0.3, 0.3, 0.05, 0.3]), 100.0, "policy")
    np.testing.assert_allclose(out.positions, [0.2, -0.2, 0.05, 0.3])
    # every decision's output stays inside the joint range
    for k in range(5):
        cmd = _feed(rt, 2.0 + k, 101.0 + k, dem=_dem(k) * 10)
        assert np.all(cmd.positions >= -0.3) and np.all(cmd.positions <= 0.3)


def test_watchdog_moves_to_safe_posture_on_stale_input_and_recovers(caplog):
    cfg = PolicyNodeConfig(max_rate=0.0, imu_timeout=0.2, joint_states_timeout=0.5, gridmap_timeout=0.5,
                           safe_posture=(0.5, 0.5, 0.4, 0.4))
    rt = PolicyRuntime(cfg, now=0.0, policy=_policy(0))
    assert rt.tick(0.1) is None  # nothing received yet, but within the start grace: nothing to do
    assert _feed(rt, 1.0, 0.1).source == "policy"
    assert rt.tick(0.25) is None  # fresh
    rt.on_joint_states(_joints(1.3), 0.35)
    rt.on_gridmap(_gridmap(1.3, _dem()), 0.35)
    with caplog.at_level("WARNING"):
        cmd = rt.tick(0.45)  # the IMU is 0.35 s old (> 0.2)
    assert cmd.source == "safe" and "imu" in cmd.reason
    np.testing.assert_allclose(cmd.positions, [0.5, 0.5, 0.4, 0.4])
    assert any("stale input" in r.message and "imu" in r.message for r in caplog.records)
    # a DEM arriving while the IMU is stale gives the safe posture too, not a decision
    assert rt.on_gridmap(_gridmap(1.4, _dem()), 0.5).source == "safe"
    level, message, _ = rt.status(0.5)
    assert level == 1 and "imu" in message
    assert _feed(rt, 1.5, 0.6).source == "policy"  # fresh again: the policy is back
    assert rt.stale == ()


def test_never_received_input_counts_from_start():
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, gridmap_timeout=0.5), now=0.0, policy=_policy(0))
    rt.on_imu(_imu(1.0), 0.4)
    rt.on_joint_states(_joints(1.0), 0.4)
    cmd = rt.tick(0.6)  # no GridMap for 0.6 s since the start
    assert cmd is not None and cmd.source == "safe" and "gridmap" in cmd.reason


def test_all_nan_dem_gives_safe_posture():
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, safe_posture=(0.1, 0.2, 0.3, 0.4), **SLOW), policy=_policy(0))
    cmd = _feed(rt, 1.0, 0.0, dem=np.full(SPEC.shape, np.nan, dtype=np.float32))
    assert cmd.source == "safe" and cmd.reason == "all-NaN DEM"
    np.testing.assert_allclose(cmd.positions, [0.1, 0.2, 0.3, 0.4])
    assert rt.counts["all-NaN DEM"] == 1


def test_an_exception_in_the_policy_gives_safe_posture_and_is_counted():
    policy = _policy(0)
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, **SLOW), policy=policy)
    assert _feed(rt, 1.0, 0.0).source == "policy"
    policy.conv_values.weight = torch.nn.Parameter(torch.zeros(3, 3, 3, 3))  # torch raises in the convolution
    cmd = _feed(rt, 1.1, 0.1)
    assert cmd.source == "safe" and "policy error" in cmd.reason and "RuntimeError" in rt.last_error
    with torch.no_grad():  # a network that outputs NaN is a failure too
        policy.conv_values.weight = torch.nn.Parameter(torch.full((16, 1, 3, 3), float("nan")))
    assert _feed(rt, 1.2, 0.2).source == "safe"
    assert rt.counts["policy errors"] == 2
    assert rt.status(0.2)[2]["policy errors"] == "2"


def test_malformed_messages_are_dropped_with_the_problem_named(caplog):
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, **SLOW), policy=_policy(0))
    with caplog.at_level("WARNING"):
        assert not rt.on_imu(_imu(1.0, q=(float("nan"), 0.0, 0.0, 0.0)), 0.0)
        assert not rt.on_joint_states(_joints(1.0, (0.1, 0.2), names=JOINT_NAMES[:2]), 0.0)
        gm = _gridmap(1.0, _dem())
        gm.data[0].data = gm.data[0].data[:-7]  # data size does not match info
        assert rt.on_gridmap(gm, 0.0) is None
        small = dem_to_gridmap(np.zeros((4, 4), dtype=np.float32), SPEC.resolution, (0.0, 0.0), "map", 1.0)
        assert rt.on_gridmap(small, 0.0) is None
    assert dict(rt.dropped) == {"imu": 1, "joint_states": 1, "gridmap": 2}
    text = " ".join(r.message for r in caplog.records)
    assert "orientation" in text and "rear_left_joint" in text and "/elevation_map" in text and "4 x 4" in text
    assert _feed(rt, 1.1, 0.1).source == "policy"  # and it goes on


def test_no_decision_before_imu_and_joint_states():
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, **SLOW), policy=_policy(0))
    assert rt.on_gridmap(_gridmap(1.0, _dem()), 0.0) is None
    assert rt.tick(0.01) is None  # still waiting for its state (state_wait 0.05 s)
    assert rt.tick(0.06) is None and rt.counts["gridmap without state"] == 1  # waited in vain: no state at all


def test_a_map_that_overtook_its_state_waits_for_it():
    policy = _policy(0)
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, state_wait=0.05, **SLOW), policy=policy)
    rt.on_imu(_imu(0.98, pitch=0.3), 0.0)
    rt.on_joint_states(_joints(1.0, (0.2, 0.3, -0.1, 0.0)), 0.0)
    assert rt.on_gridmap(_gridmap(1.0, _dem()), 0.01) is None  # the Imu stamped 1.0 is still queued
    cmd = rt.on_imu(_imu(1.0, pitch=0.1, roll=-0.05), 0.012)
    expected = policy.act_numpy(_dem(), np.array([0.1, -0.05, 0.2, 0.3, -0.1, 0.0], dtype=np.float32))
    np.testing.assert_allclose(cmd.positions, expected, atol=1e-6)
    assert cmd.arrived == 0.01 and rt.counts["decisions"] == 1
    # it never comes (the Imu's clock lags): past state_wait the next state message decides with the latest
    assert rt.on_gridmap(_gridmap(1.1, _dem(1)), 0.1) is None
    assert rt.on_joint_states(_joints(1.1, (0.2, 0.3, -0.1, 0.0)), 0.11) is None  # the Imu at 1.1 may be queued
    assert rt.tick(0.16) is None  # the timer leaves it to the state callbacks while the inputs are fresh
    late = rt.on_imu(_imu(1.05, pitch=0.2), 0.17)
    assert late.source == "policy" and late.arrived == 0.1
    assert rt.counts["decided before the state at its stamp"] == 1
    # a newer map overtakes a waiting one: the older is decided at once
    assert rt.on_gridmap(_gridmap(1.2, _dem(2)), 0.2) is None
    assert rt.on_gridmap(_gridmap(1.3, _dem(3)), 0.21).arrived == 0.2


def test_a_starved_executor_still_decides_a_map_with_the_state_at_its_stamp():
    """rclpy runs a due timer before queued messages: the timer must not decide a map whose state waits in the
    queue, and the first of two queued state messages must not decide it alone."""
    policy = _policy(0)
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, state_wait=0.05, **SLOW), policy=policy)
    rt.on_imu(_imu(0.9, pitch=0.3), 0.0)
    rt.on_joint_states(_joints(0.9, (0.0, 0.0, 0.0, 0.0)), 0.0)
    assert rt.on_gridmap(_gridmap(1.0, _dem()), 0.01) is None
    assert rt.tick(0.5) is None  # woke late: the map expired long ago, its state is queued
    assert rt.on_imu(_imu(1.0, pitch=0.1, roll=-0.05), 0.5) is None  # completes the Imu; the JointState is next
    cmd = rt.on_joint_states(_joints(1.0, (0.2, 0.3, -0.1, 0.0)), 0.5)
    expected = policy.act_numpy(_dem(), np.array([0.1, -0.05, 0.2, 0.3, -0.1, 0.0], dtype=np.float32))
    np.testing.assert_allclose(cmd.positions, expected, atol=1e-6)
    assert rt.counts["decided before the state at its stamp"] == 0
    # a stale input still decides a waiting map at the timer (with the safe posture)
    assert rt.on_gridmap(_gridmap(1.1, _dem(1)), 0.6) is None
    late = rt.tick(0.6 + SLOW["imu_timeout"] + 0.01)
    assert late is not None and late.source == "safe" and late.arrived == 0.6


def test_hot_swap_accepts_a_rewritten_checkpoint_and_refuses_bad_ones(tmp_path):
    path = tmp_path / "policy"
    save_policy(path, _policy(0))
    rt = PolicyRuntime(PolicyNodeConfig(checkpoint=str(path), max_rate=0.0, **SLOW))
    first = _feed(rt, 1.0, 0.0).positions
    assert not rt.checkpoint_changed()
    # the trainer rewrites the file: detected, validated, swapped in; the decisions change
    save_policy(path, _policy(1))
    assert rt.checkpoint_changed()
    assert rt.swap_checkpoint(str(path)).accepted
    assert not rt.checkpoint_changed()
    second = _feed(rt, 1.1, 0.1).positions
    assert not np.allclose(first, second)
    running = rt.policy
    # damaged weights: refused, the running policy kept, the reason says which file
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-100])
    assert rt.checkpoint_changed()
    result = rt.swap_checkpoint(str(path))
    assert not result.accepted and "policy.safetensors" in result.reason
    assert rt.policy is running and not rt.checkpoint_changed()  # not retried until the files change again
    np.testing.assert_array_equal(_feed(rt, 1.1, 0.2).positions, second)
    # another DEM shape: refused with the shapes named
    other = tmp_path / "other"
    save_policy(other, _policy(2, PolicyConfig(dem_shape=(10, 5))))
    result = rt.swap_checkpoint(str(other))
    assert not result.accepted and "(10, 5)" in result.reason and rt.policy is running
    # finite weights (a diverged training run) whose decision overflows to inf - inf = NaN: refused by the test decision
    nan_policy = _policy(3)
    with torch.no_grad():
        sign = torch.where(torch.arange(nan_policy.head[0].weight.shape[0]) % 2 == 0, 1.0, -1.0)[:, None]
        nan_policy.head[0].weight.copy_(3e38 * sign.expand_as(nan_policy.head[0].weight))
        nan_policy.head[-1].weight.fill_(1.0)
    save_policy(tmp_path / "nan", nan_policy)
    result = rt.swap_checkpoint(str(tmp_path / "nan"))
    assert not result.accepted and "test decision" in result.reason and rt.policy is running
    # a missing checkpoint: refused
    assert not rt.swap_checkpoint(str(tmp_path / "missing")).accepted
    level, message, values = rt.status(0.3)
    assert level == 1 and "refused" in message and values["swaps refused"] == "4" and values["swaps accepted"] == "2"


def test_bad_checkpoint_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="checkpoint.*missing"):
        PolicyRuntime(PolicyNodeConfig(checkpoint=str(tmp_path / "missing")))


def test_no_checkpoint_holds_safe_posture_with_an_error_status():
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, **SLOW))
    cmd = _feed(rt, 1.0, 0.0)
    assert cmd.source == "safe" and cmd.reason == "no policy loaded"
    assert rt.status(0.0)[0] == 2


def test_state_readers():
    """pitch_roll: REP 103 pitch and roll of the orientation (yaw ignored), None for no rotation; flipper_angles: the
    named joints in the asked order, or what is wrong with the message."""
    assert pitch_roll(_imu(0.0, pitch=0.3, roll=-0.2)) == pytest.approx((0.3, -0.2))
    assert pitch_roll(_imu(0.0, q=(math.nan, 0.0, 0.0, 1.0))) is None
    assert pitch_roll(_imu(0.0, q=(0.0, 0.0, 0.0, 0.0))) is None
    names = ("extra", *reversed(JOINT_NAMES))
    np.testing.assert_array_equal(flipper_angles(_joints(0.0, (9.0, 4.0, 3.0, 2.0, 1.0), names)), [1.0, 2.0, 3.0, 4.0])
    assert "missing joint(s) ['rear_right_joint']" in flipper_angles(_joints(0.0, (1.0, 2.0, 3.0), JOINT_NAMES[:3]))
    assert "3 positions for 4 names" in flipper_angles(_joints(0.0, (1.0, 2.0, 3.0)))
    assert "non-finite" in flipper_angles(_joints(0.0, (1.0, math.inf, 3.0, 4.0)))


@pytest.mark.parametrize("field, value, words", [
    ("rate_hz", 0.0, "rate_hz must lie in"),
    ("imu_timeout", -1.0, "imu_timeout must lie in"),
    ("max_rate", math.nan, "max_rate"),
    ("joint_lower", 2.0, "joint_lower < joint_upper"),
    ("safe_posture", (0.0, 0.0, 0.0), "safe_posture must be 4"),
    ("safe_posture", (3.0, 0.0, 0.0, 0.0), "leaves the joint range"),
    ("flipper_joints", ("a", "a", "b", "c"), "flipper_joints must be 4 different"),
    ("controller_joints", ("a", "b", "c", "d"), "permutation of flipper_joints"),
    ("layer", "", "layer must be a non-empty"),
])
def test_bad_config_values_are_named(field, value, words):
    with pytest.raises(ValueError, match=words):
        PolicyNodeConfig(**{field: value})


def test_reconfigure_swaps_a_new_checkpoint_or_refuses_and_keeps_everything(tmp_path):
    save_policy(tmp_path / "a", _policy(0))
    save_policy(tmp_path / "b", _policy(1))
    cfg = PolicyNodeConfig(checkpoint=str(tmp_path / "a"), max_rate=0.0, **SLOW)
    rt = PolicyRuntime(cfg)
    running = rt.policy
    from dataclasses import replace

    with pytest.raises(ValueError, match="missing"):
        rt.reconfigure(replace(cfg, checkpoint=str(tmp_path / "missing"), safe_posture=(0.3,) * 4))
    assert rt.policy is running and rt.config is cfg  # refused as a whole: the posture did not change either
    with pytest.raises(ValueError, match="gan_checkpoint"):
        rt.reconfigure(replace(cfg, gan_checkpoint=str(tmp_path / "no_gan")))
    rt.reconfigure(replace(cfg, checkpoint=str(tmp_path / "b"), safe_posture=(0.3,) * 4))
    assert rt.policy is not running and rt.checkpoint == str(tmp_path / "b")
    np.testing.assert_allclose(rt._safe, 0.3)
    save_policy(tmp_path / "b", _policy(2))  # the new path is the one watched now
    assert rt.checkpoint_changed()
