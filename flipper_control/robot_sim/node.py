"""``robot_sim_node``: the embedded simulator as a ROS 2 robot; a thin rclpy file over ``RobotSim`` and ``Runner``.

Publishes what the robot publishes -- /points (sensor QoS), /imu/data (sensor), /joint_states, /tf, /tf_static
(latched), /clock -- and, when the run ends, its level and reasons as JSON on /robot_sim/result (std_msgs/String,
latched); with ``backend: exact`` also the exact DEM on /robot_sim/exact_elevation_map. Takes
/flipper_controller/commands (std_msgs/Float64MultiArray) and /cmd_vel (geometry_msgs/Twist). Topic names are
the robot's; rename them with ROS remapping (``-r /points:=/lidar/points``, ``<remap>`` in a launch file).

Every field of ``RobotSimConfig`` is a parameter, checked at start (a bad world, reality config or value exits
with status 2 and the reason); they apply at start only, so ``set_parameters`` refuses changes (restart the node
for another world). The run itself goes on in a thread of its own (``Runner``), paced in real time or lockstep.
``ros2 run flipper_learning robot_sim_node --ros-args -p world:=test/stairs_up -p seed:=1``.
"""

from __future__ import annotations

import threading
from dataclasses import fields

from flipper_control.robot_sim.core import (
    EXACT_MAP_TOPIC,
    PARAMETER_RANGES,
    RESULT_TOPIC,
    CommandError,
    RobotSim,
    RobotSimConfig,
)
from flipper_control.robot_sim.messages import CLOCK
from flipper_control.robot_sim.runner import Runner
from perception.messages import CMD_VEL, FLIPPER_COMMANDS, GRIDMAP, IMU, JOINT_STATES, POINTS, TF, TF_STATIC, TOPIC_TYPES

__all__ = ["PARAM_DESCRIPTIONS", "RobotSimNode", "declared_parameters", "main"]

PARAM_DESCRIPTIONS: dict[str, str] = {
    "world": "built-in world (flat, test/stairs_up, proxy/staircase, training/3) or a world YAML file",
    "reality_config": "reality-proxy YAML (as flipper --reality-config); empty: the defaults; backend proxy only",
    "backend": "proxy (perturbed robot, noisy lidar, drifting odometry) or exact (the exact simulator's run, "
               "noise-free lidar, exact DEM on /robot_sim/exact_elevation_map)",
    "seed": "noise seed of the run (as flipper eval --seed)",
    "real_time_factor": "simulated seconds per wall second (not in lockstep)",
    "lockstep": "after each step wait for the controller's command, then step at once (deterministic closed loops)",
    "control_dt": "s of simulation per step: one /points slice, one /joint_states",
    "command_wait": "real time: wall s to wait after a step for the command that answers it",
    "command_timeout": "lockstep: wall s to wait for a command before stepping on with the last one",
    "start_timeout": "wall s to hold at t = 0 (republishing the start state) until the first command; 0: start at once",
    "hold_period": "wall s between republications of the start state while holding",
    "epoch": "stamps are epoch + simulated seconds; negative: the wall clock at start; 1700000000: flipper record's",
    "max_time": "end the run after this many simulated seconds; 0: the world's time limit",
    "max_speed": "m/s: /cmd_vel linear.x is clamped to +-this",
    "max_yaw_rate": "rad/s: /cmd_vel angular.z is clamped to +-this",
    "publish_clock": "publish /clock (for nodes with use_sim_time)",
    "exit_when_done": "shut the node down once the result is published",
    "result_file": "also write the result JSON to this file (atomically); empty: no file",
}


def param_info() -> dict:
    """``ParamInfo`` (description, range) of every parameter, for the ROS adapter."""
    from perception.ros_adapter import ParamInfo

    return {f.name: ParamInfo(PARAM_DESCRIPTIONS[f.name], *PARAMETER_RANGES.get(f.name, (None, None)))
            for f in fields(RobotSimConfig)}


def declared_parameters() -> list[str]:
    """The parameters this node declares (besides rclpy's own ``use_sim_time``): every ``RobotSimConfig`` field."""
    return [f.name for f in fields(RobotSimConfig)]


class RobotSimNode:
    """The node object: ``adapter`` (rclpy), ``sim`` (the core), ``runner`` (its pacing thread)."""

    def __init__(self, name: str = "robot_sim_node"):
        from perception.ros_adapter import ConfigError, DiagStatus, NodeAdapter
        from sim.world import WorldError

        self.adapter = a = NodeAdapter(name, RobotSimConfig, param_info=param_info())
        try:
            self.sim = RobotSim(a.config)
        except (ValueError, WorldError) as exc:  # a world or reality file that is missing or wrong
            raise ConfigError(f"{name}: {exc}") from None
        types = {**TOPIC_TYPES, CLOCK: "rosgraph_msgs/msg/Clock", RESULT_TOPIC: "std_msgs/msg/String",
                 EXACT_MAP_TOPIC: GRIDMAP}
        outputs = [POINTS, IMU, JOINT_STATES, TF, TF_STATIC, CLOCK] + ([EXACT_MAP_TOPIC] if a.config.backend == "exact" else [])
        self.pubs = {t: a.publisher(t, types[t]) for t in outputs}
        # latched: a bench or a test that subscribes after the run still gets its result
        self.pubs[RESULT_TOPIC] = a.publisher(RESULT_TOPIC, types[RESULT_TOPIC], qos="latched", depth=1)
        self.runner = Runner(self.sim, self._publish)
        a.subscribe(FLIPPER_COMMANDS, TOPIC_TYPES[FLIPPER_COMMANDS], self._guarded(self.runner.on_command, "commands"))
        a.subscribe(CMD_VEL, TOPIC_TYPES[CMD_VEL], self._guarded(self.runner.on_cmd_vel, "cmd_vel"))
        a.on_config_change(self._refuse_change)
        self._diag = DiagStatus
        a.diagnose(self.diagnose)
        self.thread = threading.Thread(target=self._run, name="robot_sim", daemon=True)
        self.thread.start()

    def _publish(self, topic: str, message) -> None:
        self.pubs[topic].publish(message)

    def _guarded(self, callback, what: str):
        def on_message(message) -> None:
            try:
                callback(message)
            except CommandError as exc:  # dropped with a throttled warning; the last good input stays
                self.adapter.warn_throttled(f"bad {what}", str(exc))
        return on_message

    def _refuse_change(self, _config) -> None:
        raise ValueError("robot_sim_node's parameters apply at start only (a world cannot change mid-run); restart "
                         "the node with the new values")

    def _run(self) -> None:
        logger = self.adapter.logger
        c = self.sim.config
        logger.info(f"robot_sim: {self.sim.world.name} on the {c.backend} backend, seed {c.seed}, "
                    + ("lockstep" if c.lockstep else f"real-time factor {c.real_time_factor:g}"))
        try:
            result = self.runner.run()
        except Exception as exc:  # noqa: BLE001 - say why the robot stopped, keep the node up for its diagnostics
            logger.error(f"robot_sim: the run stopped: {type(exc).__name__}: {exc}")
            return
        logger.info(f"robot_sim: run ended: {result['level']} ({result['distance']:.2f} m in {result['time']:.1f} s)"
                    + (f": {'; '.join(result['reasons'])}" if result["reasons"] else ""))
        if c.exit_when_done:
            import rclpy

            rclpy.try_shutdown()  # ends the spin in run_node: exit status 0

    def diagnose(self):
        """The core's key/values and the runner's pacing; WARN while steps run late or lockstep commands time out."""
        values = {**self.sim.diagnostics(), **{k: str(v) for k, v in self.runner.stats().items()}}
        late = self.runner.late_steps or self.runner.command_timeouts
        level = self._diag.WARN if late else self._diag.OK
        message = "run ended" if self.sim.result is not None else ("running" if self.sim.running else "starting")
        return self._diag(level, message, values)


def main(args=None) -> int:
    """``ros2 run flipper_learning robot_sim_node`` (or the ``robot_sim_node`` console script)."""
    from perception.ros_adapter import run_node

    return run_node(RobotSimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
