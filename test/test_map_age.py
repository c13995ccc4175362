"""G's map-age input (``GanConfig.map_age_s``): the youth scalar, the ages of recorded states, the identity start,
a G that learns the fresh map's missing rows from unpaired sets, the transform's two paths, and the callers that
feed the age (the loop's controller wrapper, the sim -> real node)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flipper_control.learning.tasks import ThroughTransform
from flipper_control.policy import NanAwarePolicy, PolicyConfig
from flipper_control.policy_node_config import PolicyNodeConfig
from flipper_control.policy_runtime import PolicyRuntime
from perception.cyclegan import MAP_YOUTH_SCALE, CycleGan, GanConfig, load_gan, map_youth, save_gan, with_map_youth
from perception.gan_training import GanData, GanTrainConfig, split_by_trajectory, train_gan
from perception.gridmap import dem_to_gridmap, gridmap_to_dem
from perception.map_clock import MapClock, takes_map_age, trajectory_ages
from perception.messages import header, msg
from perception.sim2real_node import JOINT_NAMES, Sim2RealConfig, Sim2RealCore
from perception.sim_to_real import SimToReal
from sim.dem import DemSpec
from sim.simulator import Observation

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py
SMALL = GanConfig(channels=4, conv_layers=2, disc_hidden=16, map_age_s=2.0)
BEHIND = slice(14, 20)  # the rows behind the robot: unseen while a run's map is young


def test_the_youth_falls_from_its_scale_at_the_start_to_zero_at_the_horizon():
    youth = map_youth(np.array([0.0, 1.0, 2.0, 7.0]), 4, horizon_s=2.0)
    np.testing.assert_allclose(youth[:, 0], [MAP_YOUTH_SCALE, MAP_YOUTH_SCALE / 2, 0.0, 0.0])
    assert youth.dtype == np.float32 and youth.shape == (4, 1)
    np.testing.assert_array_equal(map_youth(None, 3, 2.0), np.zeros((3, 1)))  # unknown age: an old map
    for bad in (np.array([-0.1]), np.array([np.nan])):
        with pytest.raises(ValueError, match="finite seconds >= 0"):
            map_youth(bad, 1, 2.0)
    with pytest.raises(ValueError, match="2 DEMs need 2 ages"):
        map_youth(np.zeros(3), 2, 2.0)
    scalars = np.ones((2, 6), np.float32)
    assert with_map_youth(scalars, GanConfig(), np.zeros(2)) is scalars  # no map-age input: unchanged
    assert with_map_youth(scalars, SMALL, np.zeros(2)).shape == (2, 7)


def test_ages_count_control_periods_from_each_trajectorys_first_state():
    traj = np.array([3, 3, 3, 0, 0, 7, 3])  # trajectories in blocks, and one interleaved state
    np.testing.assert_allclose(trajectory_ages(traj), [0.0, 0.1, 0.2, 0.0, 0.1, 0.0, 0.3])
    data = GanData(np.zeros((7, 20, 5), np.float32), np.zeros((7, 6), np.float32), traj)
    np.testing.assert_allclose(data.age, trajectory_ages(traj))
    train, test = split_by_trajectory(data, 0.3, np.random.default_rng(0))  # the split keeps each state's age
    assert sorted(np.r_[train.age, test.age].tolist()) == sorted(data.age.tolist())


def test_config_bounds_width_and_parameter_count():
    assert SMALL.scalar_width == 7 and GanConfig().scalar_width == 6
    assert SMALL.parameter_count() == sum(p.numel() for p in CycleGan(SMALL).parameters())
    for bad in (-1.0, 601.0, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="map_age_s must be a number of seconds"):
            GanConfig(map_age_s=bad)


def _young_and_old(n_traj: int = 8, steps: int = 50, seed: int = 0):
    """Sim and real sets of ``n_traj`` runs of ``steps`` states: real DEMs miss the rows behind the robot in each
    run's first second, as a fresh point map does, and only a little of anything else later."""
    rng = np.random.default_rng(seed)
    n = n_traj * steps
    traj = np.repeat(np.arange(n_traj), steps)
    sim = rng.normal(-0.1, 0.02, (n, 20, 5)).astype(np.float32)
    real = rng.normal(-0.1, 0.02, (n, 20, 5)).astype(np.float32)
    young = trajectory_ages(traj) < 1.0
    real[young, BEHIND] = np.nan
    scalars = rng.uniform(-0.2, 0.2, (n, 6)).astype(np.float32)
    return GanData(sim, scalars, traj), GanData(real, scalars.copy(), traj)


def test_a_fresh_generator_with_the_input_is_the_identity_at_any_age():
    sim, _ = _young_and_old(2, 30)
    g = SimToReal(CycleGan(SMALL).g)
    for age in (None, np.zeros(len(sim)), sim.age):
        np.testing.assert_allclose(g.transform(sim.dems, sim.scalars, map_age=age), sim.dems, atol=1e-6)


def test_g_learns_the_fresh_maps_missing_rows_from_unpaired_sets_and_both_paths_agree(tmp_path):
    sim, real = _young_and_old()
    config = GanTrainConfig(epochs=6, steps_per_epoch=40, batch_size=32, gan=SMALL)
    gan, _ = train_gan(sim, real, config, seed=0)
    g = SimToReal(gan.g)
    at_start = g.transform(sim.dems[:40], sim.scalars[:40], map_age=np.zeros(40))
    later = g.transform(sim.dems[:40], sim.scalars[:40], map_age=np.full(40, 4.0))
    assert np.isnan(at_start[:, BEHIND]).mean() > 0.8  # the rows behind hidden on a young map
    assert np.isnan(later[:, BEHIND]).mean() < 0.2  # and kept once the map has seen them
    np.testing.assert_array_equal(g.transform(sim.dems[:40], sim.scalars[:40]), later)  # no age: an old map
    save_gan(tmp_path / "gan", gan)
    one = SimToReal(load_gan(tmp_path / "gan")[0].g)  # the checkpoint keeps the input; the one-DEM path agrees
    assert one.map_age_s == 2.0 and takes_map_age(one) and not takes_map_age(SimToReal(CycleGan(GanConfig()).g))
    np.testing.assert_allclose(one(sim.dems[0], sim.scalars[0], map_age=0.0), at_start[0], atol=1e-5)
    np.testing.assert_allclose(one(sim.dems[0], sim.scalars[0]), later[0], atol=1e-5)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="finite seconds >= 0"):
            one(sim.dems[0], sim.scalars[0], map_age=bad)


class _Recorder:
    """A SimToReal-like transform with the map-age input that records the ages it is given."""

    map_age_s = 5.0
    config = GanConfig(map_age_s=5.0)  # what policy_node checks against the policy's DEM shape

    def __init__(self):
        self.ages: list[float | None] = []

    def __call__(self, dem, scalars, map_age=None):
        self.ages.append(map_age)
        return dem


def test_the_loops_controller_wrapper_gives_g_the_runs_time():
    seen = []

    class Controller:
        def reset(self):
            pass

        def act(self, obs):
            seen.append(obs.dem)
            return np.zeros(4)

    g = _Recorder()
    wrapped = ThroughTransform(Controller(), g)
    for t in (0.0, 0.1, 2.5):
        wrapped.act(Observation(dem=np.zeros((20, 5), np.float32), pitch=0.0, roll=0.0, flipper_angles=np.zeros(4), time=t))
    assert g.ages == [0.0, 0.1, 2.5] and len(seen) == 3


def test_the_map_clock_counts_from_the_first_stamp_and_restarts_when_time_goes_back():
    clock = MapClock()
    assert [clock.age(t) for t in (10**9, 3 * 10**9, 2 * 10**9)] == [0.0, 2.0, 1.0]
    assert clock.age(5 * 10**8) == 0.0 and clock.age(10**9) == 0.5  # a reset: a new map


def test_the_sim2real_node_gives_g_the_time_since_its_first_map():
    spec = DemSpec()
    g = _Recorder()
    core = Sim2RealCore(Sim2RealConfig(), transform=g)
    quat = msg("geometry_msgs/msg/Quaternion")(w=1.0, x=0.0, y=0.0, z=0.0)
    v = msg("geometry_msgs/msg/Vector3")(x=0.0, y=0.0, z=0.0)
    core.on_imu(msg("sensor_msgs/msg/Imu")(header=header("imu", 1.0), orientation=quat, orientation_covariance=np.zeros(9),
                                           angular_velocity=v, angular_velocity_covariance=np.zeros(9),
                                           linear_acceleration=v, linear_acceleration_covariance=np.zeros(9)))
    core.on_joint_states(msg("sensor_msgs/msg/JointState")(header=header("", 1.0), name=list(JOINT_NAMES),
                                                           position=np.zeros(4), velocity=np.zeros(0), effort=np.zeros(0)))
    dem = np.zeros(spec.shape, np.float32)
    for stamp in (5.0, 6.5, 9.0):
        out = core.on_gridmap(dem_to_gridmap(dem, spec.resolution, (0.0, 0.0), "map", stamp))
        np.testing.assert_array_equal(gridmap_to_dem(out)[0], dem)
    assert g.ages == pytest.approx([0.0, 1.5, 4.0])


def test_the_policy_node_gives_g_the_time_since_its_first_map():
    """policy_node with a G in front of the policy (a policy trained through G, run in a simulator): the same clock."""
    spec = DemSpec()
    g = _Recorder()
    torch.manual_seed(0)
    slow = dict(gridmap_timeout=60.0, imu_timeout=60.0, joint_states_timeout=60.0)
    rt = PolicyRuntime(PolicyNodeConfig(max_rate=0.0, **slow), policy=NanAwarePolicy(PolicyConfig()).eval(), transform=g)
    g.ages.clear()  # whatever the start-up check fed it
    quat = msg("geometry_msgs/msg/Quaternion")(w=1.0, x=0.0, y=0.0, z=0.0)
    v = msg("geometry_msgs/msg/Vector3")(x=0.0, y=0.0, z=0.0)
    for stamp in (10.0, 10.5, 12.0):
        rt.on_imu(msg("sensor_msgs/msg/Imu")(header=header("imu", stamp), orientation=quat, orientation_covariance=np.zeros(9),
                                             angular_velocity=v, angular_velocity_covariance=np.zeros(9),
                                             linear_acceleration=v, linear_acceleration_covariance=np.zeros(9)), stamp)
        rt.on_joint_states(msg("sensor_msgs/msg/JointState")(header=header("", stamp), name=list(JOINT_NAMES),
                                                             position=np.zeros(4), velocity=np.zeros(0),
                                                             effort=np.zeros(0)), stamp)
        cmd = rt.on_gridmap(dem_to_gridmap(np.zeros(spec.shape, np.float32), spec.resolution, (0.0, 0.0), "map", stamp), stamp)
        assert cmd.source == "policy"
    assert g.ages == pytest.approx([0.0, 0.5, 2.0])
