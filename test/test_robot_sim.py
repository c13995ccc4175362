"""robot_sim's pure core and runner (no ROS): the messages equal a recorded bag's, stepping equals ``flipper eval``'s,
the exact backend is the exact simulator's run, a paced run keeps its real-time factor, bad input is refused by name,
and a closed loop through the DEM node's core (DemHandler) answers every step in lockstep."""

from __future__ import annotations

import json
import queue
import threading

import numpy as np
import pytest

from flipper_control.controllers import HeuristicController
from flipper_control.learning.bags import record_proxy_run
from flipper_control.robot_sim.core import (
    RESULT_TOPIC,
    CommandError,
    RobotSim,
    RobotSimConfig,
    declared_parameters,
    exact_backend_config,
)
from flipper_control.robot_sim.messages import CLOCK, JOINT_NAMES
from flipper_control.robot_sim.runner import Runner
from perception.bag_io import DEFAULT_EPOCH
from perception.bag_reader import BagReader
from perception.dem_handler import DemHandler
from perception.messages import FLIPPER_COMMANDS, IMU, JOINT_STATES, POINTS, TF, TF_STATIC, TOPIC_TYPES, msg, typestore
from sim.reality_proxy import RealityProxy
from sim.rollout import run_episode
from sim.safety import euler_from_quat
from sim.simulator import Observation
from sim.world import load_world

ROBOT_TOPICS = (POINTS, TF, TF_STATIC, IMU, JOINT_STATES)
# a short course with an obstacle the heuristic reacts to: whole runs in a few seconds
SHORT_STEP = {"name": "short_step", "length": 1.6, "speed": 0.3,
              "terrain": [{"type": "step", "position": [0.7, 0.0], "height": 0.15, "width": 1.5, "length": 1.5}]}


def _command(targets) -> object:
    return msg("std_msgs/msg/Float64MultiArray")(layout=msg("std_msgs/msg/MultiArrayLayout")(dim=[], data_offset=0),
                                                data=np.asarray(targets, dtype=np.float64))


def _cdr(topic: str, message) -> bytes:
    return bytes(typestore().serialize_cdr(message, TOPIC_TYPES[topic]))


def _drive_in_process(sim: RobotSim, controller, observe) -> list[tuple[str, object]]:
    """Step ``sim`` to its end, the controller answering every step from ``observe()`` (run_episode's order)."""
    out = sim.start()
    controller.reset()
    while sim.running:
        sim.on_command(_command(controller.act(observe())))
        out += sim.step()
    return out


def test_live_messages_equal_a_recorded_bag(tmp_path, builtin_worlds):
    world = builtin_worlds["test/step_up"]
    summary = record_proxy_run(world, HeuristicController(), tmp_path / "bag", seed=3, max_time=1.0, epoch=DEFAULT_EPOCH)
    sim = RobotSim(RobotSimConfig(seed=3, max_time=1.0, epoch=DEFAULT_EPOCH, publish_clock=False), world=world)
    live = _drive_in_process(sim, HeuristicController(), sim.proxy.observation)
    with BagReader(tmp_path / "bag") as reader:
        recorded = [(m.topic, _cdr(m.topic, m.msg)) for m in reader.messages(list(ROBOT_TOPICS))]
    mine = [(t, _cdr(t, m)) for t, m in live if t in ROBOT_TOPICS]
    assert len(mine) == len(recorded) == sum(summary["messages"][t] for t in ROBOT_TOPICS)
    for topic in ROBOT_TOPICS:  # same messages, byte for byte, per topic in order
        assert [b for t, b in mine if t == topic] == [b for t, b in recorded if t == topic], topic
    assert live[-1][0] == RESULT_TOPIC and json.loads(live[-1][1].data)["time"] == pytest.approx(1.0)


def test_lockstep_stepping_is_flipper_evals_on_the_proxy(write_world):
    world = load_world(write_world(SHORT_STEP))
    expected = run_episode(RealityProxy(), world, HeuristicController(), seed=1).to_dict()
    sim = RobotSim(RobotSimConfig(seed=1, epoch=0.0), world=world)
    out = _drive_in_process(sim, HeuristicController(), sim.proxy.observation)
    result = json.loads(out[-1][1].data)
    assert {k: result[k] for k in expected} == expected
    assert result["commands"] == result["steps"] > 30
    # /clock leads every substep: as many clocks as /tf messages, each stamped like the /tf after it
    clocks = [m for t, m in out if t == CLOCK]
    tfs = [m for t, m in out if t == TF]
    assert len(clocks) == len(tfs) and clocks[-1].clock == tfs[-1].transforms[0].header.stamp


def test_exact_backend_runs_the_exact_simulators_run(write_world):
    from sim.mujoco_sim import MujocoSimulator

    world = load_world(write_world(SHORT_STEP))
    expected = run_episode(MujocoSimulator(), world, HeuristicController(), seed=2).to_dict()
    sim = RobotSim(RobotSimConfig(backend="exact", seed=2, epoch=0.0), world=world)
    out = _drive_in_process(sim, HeuristicController(), sim.proxy.sim.observation)  # the exact DEM, as eval feeds it
    result = json.loads(out[-1][1].data)
    assert {k: result[k] for k in expected} == expected
    cfg = exact_backend_config()
    assert cfg.lidar.range_sigma == 0 and not cfg.odometry.enabled and cfg.dynamics.delay == (0.0, 0.0)
    assert sum(t == "/robot_sim/exact_elevation_map" for t, _ in out) == result["steps"] + 1


def test_bad_commands_and_config_are_refused_by_name(builtin_worlds):
    sim = RobotSim(RobotSimConfig(epoch=0.0, max_time=0.2), world=builtin_worlds["test/flat"])
    sim.start()
    sim.on_command(_command([0.1, 0.1, -0.1, -0.1]))
    for bad in ([0.1, 0.2], [np.nan, 0, 0, 0], []):
        with pytest.raises(CommandError, match=r"/flipper_controller/commands: expected 4 finite positions"):
            sim.on_command(_command(bad))
    assert sim.commands == 1 and sim.bad_inputs == 3
    twist = msg("geometry_msgs/msg/Twist")(linear=msg("geometry_msgs/msg/Vector3")(x=5.0, y=0.0, z=0.0),
                                          angular=msg("geometry_msgs/msg/Vector3")(x=0.0, y=0.0, z=np.inf))
    with pytest.raises(CommandError, match="/cmd_vel"):
        sim.on_cmd_vel(twist)
    twist.angular.z = -3.0
    assert sim.on_cmd_vel(twist) == (1.0, -1.0)  # clamped to max_speed, max_yaw_rate
    sim.step()
    assert np.allclose(sim.proxy.last_step.flipper_commands, [0.1, 0.1, -0.1, -0.1])  # the last good command
    for field, value, needle in (("backend", "gazebo", "backend must be one of proxy, exact"),
                                 ("real_time_factor", 0.0, "real_time_factor must be > 0"),
                                 ("command_wait", -1.0, "command_wait must be >= 0")):
        with pytest.raises(ValueError, match=needle):
            RobotSimConfig(**{field: value})
    with pytest.raises(ValueError, match="no such reality config file"):
        RobotSim(RobotSimConfig(reality_config="/nonexistent/reality.yaml"))
    assert {"world", "seed", "backend", "real_time_factor", "lockstep", "reality_config"} <= set(declared_parameters())


def test_cmd_vel_turns_the_robot(builtin_worlds):
    sim = RobotSim(RobotSimConfig(epoch=0.0, max_time=1.5), world=builtin_worlds["test/flat"])
    sim.start()
    v3 = msg("geometry_msgs/msg/Vector3")
    sim.on_cmd_vel(msg("geometry_msgs/msg/Twist")(linear=v3(x=0.0, y=0.0, z=0.0), angular=v3(x=0.0, y=0.0, z=0.8)))
    x0 = sim.proxy.pose()[0][0]
    while sim.running:
        sim.step()
    position, quat = sim.proxy.pose()
    assert euler_from_quat(quat)[2] > 0.3  # turned left on the spot
    assert abs(position[0] - x0) < 0.1


def test_runner_keeps_the_real_time_factor(builtin_worlds):
    sim = RobotSim(RobotSimConfig(epoch=0.0, max_time=1.0, real_time_factor=2.0, start_timeout=0.0),
                   world=builtin_worlds["test/flat"])
    published: list[str] = []
    runner = Runner(sim, lambda topic, message: published.append(topic))
    result = runner.run()
    assert 1.4 < result["real_time_factor"] <= 2.1, result  # sleeps to each step's due time: never much faster
    assert published.count(POINTS) == 11 and published[-1] == RESULT_TOPIC  # start cloud + 10 steps
    assert result["started_without_command"] is False  # start_timeout 0: starting at once is asked for


def test_lockstep_closed_loop_through_the_dem_handler(builtin_worlds):
    """robot_sim -> messages -> DemHandler (dem_node's core) -> heuristic -> commands, on two threads."""
    sim = RobotSim(RobotSimConfig(epoch=DEFAULT_EPOCH, max_time=2.0, lockstep=True, command_timeout=5.0),
                   world=builtin_worlds["test/step_up"])
    inbox: queue.Queue = queue.Queue()
    runner = Runner(sim, lambda topic, message: inbox.put((topic, message)))
    handler, controller = DemHandler(), HeuristicController()
    maps = []

    def robot_side():
        state = {"pitch_roll": None, "flippers": None}
        while True:
            topic, m = inbox.get()
            if topic == RESULT_TOPIC:
                return
            if topic in (TF, TF_STATIC):
                handler.on_tf(m, static=topic == TF_STATIC)
            elif topic == IMU:
                q = m.orientation
                roll, pitch, _ = euler_from_quat(np.array([q.w, q.x, q.y, q.z]))
                state["pitch_roll"] = (pitch, roll)
            elif topic == JOINT_STATES:
                handler.on_joint_states(m)
                state["flippers"] = np.asarray(m.position)
            elif topic == POINTS:
                built = handler.on_cloud(m)
                if built is None:
                    continue
                maps.append(built.dem)
                pitch, roll = state["pitch_roll"]
                obs = Observation(dem=built.dem, pitch=pitch, roll=roll, flipper_angles=state["flippers"])
                runner.on_command(_command(controller.act(obs)))

    peer = threading.Thread(target=robot_side, daemon=True)
    peer.start()
    result = runner.run()
    peer.join(10)
    assert not peer.is_alive()
    assert result["level"] in ("good", "unclear", "fail") and result["time"] == pytest.approx(2.0)
    # every step was answered: the hold ended with the answer to the start cloud, each step waited for its own
    # answer (the last step's answer comes after the result)
    assert result["command_timeouts"] == 0 and result["commands"] == result["steps"] == len(maps) - 1 == 20
    assert len(JOINT_NAMES) == 4 and FLIPPER_COMMANDS == "/flipper_controller/commands"
    assert any(np.isfinite(d).mean() > 0.3 for d in maps)  # the lidar saw the ground ahead
