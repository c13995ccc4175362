"""The live flipper policy node: a thin rclpy file over ``flipper_control.policy_runtime.PolicyRuntime``.

Subscribes to the GridMap (``/elevation_map``), ``/imu/data`` and ``/joint_states``; publishes the four flipper
targets as ``std_msgs/Float64MultiArray`` on ``/flipper_controller/commands`` (a ros2_control forward position
controller, in the order of its ``joints`` parameter = ``controller_joints``). A decision is published as soon as
a GridMap arrives; a timer at ``rate_hz`` runs the watchdog and the rate limit; another checks the checkpoint
files every ``checkpoint_poll`` s and validates a rewritten checkpoint in a background thread before it is
swapped in. Every field of ``PolicyNodeConfig`` is a parameter (a ``checkpoint`` change is validated first and
refused, the old policy kept, when it fails); /diagnostics reports the runtime's state, its counters and the
node's own arrival-to-publish latency. rclpy is imported only through ``perception.ros_adapter``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from flipper_control.policy_node_config import PolicyNodeConfig
from flipper_control.policy_runtime import PolicyRuntime
from perception.messages import ELEVATION_MAP, FLIPPER_COMMANDS, IMU, JOINT_STATES, msg

TOPICS = {  # static (read-only) parameters: remap or set them at start
    "gridmap_topic": (ELEVATION_MAP, "grid_map_msgs/GridMap input (the DEM)"),
    "imu_topic": (IMU, "sensor_msgs/Imu input (pitch and roll of its orientation)"),
    "joint_states_topic": (JOINT_STATES, "sensor_msgs/JointState input (the four flipper angles)"),
    "commands_topic": (FLIPPER_COMMANDS, "std_msgs/Float64MultiArray output (the forward position controller)"),
}
COMMANDS_TYPE = "std_msgs/msg/Float64MultiArray"


def command_message(positions: np.ndarray):
    """The Float64MultiArray of one command (a one-dimensional layout labelled 'flippers', as the recorder writes)."""
    n = len(positions)
    dim = msg("std_msgs/msg/MultiArrayDimension")(label="flippers", size=n, stride=n)
    layout = msg("std_msgs/msg/MultiArrayLayout")(dim=[dim], data_offset=0)
    return msg(COMMANDS_TYPE)(layout=layout, data=np.asarray(positions, dtype=np.float64))


def _sensor_qos(depth: int):
    """Sensor-data QoS (best effort, volatile: a reliable reader gets nothing from a best-effort driver) with a
    deeper history than rclpy's 5."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


class _ToRosLogger(logging.Handler):
    """The runtime's Python warnings (dropped input, stale input, refused checkpoints) on the node's ROS logger."""

    def __init__(self, ros_logger):
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        (self.ros_logger.warning if record.levelno >= logging.WARNING else self.ros_logger.info)(self.format(record))


class PolicyNode:
    """GridMap + Imu + JointState in, flipper commands out; the work is in ``PolicyRuntime``."""

    def __init__(self, node_name: str = "policy_node"):
        import torch

        from perception.ros_adapter import ConfigError, DiagStatus, NodeAdapter

        torch.set_num_threads(1)  # one small network per decision: extra threads only add hand-off latency
        self.adapter = a = NodeAdapter(node_name, PolicyNodeConfig, static_params=TOPICS)
        self._log_handler = _ToRosLogger(a.logger)
        logging.getLogger("flipper_control.policy_runtime").addHandler(self._log_handler)
        topics = {k.removesuffix("_topic"): a.param(k) for k in TOPICS}
        try:
            self.runtime = PolicyRuntime(a.config, now=time.monotonic(), topics=topics)
        except ValueError as exc:
            raise ConfigError(f"{node_name}: {exc}") from None
        self.latency_ms: deque[float] = deque(maxlen=1000)  # GridMap callback entry -> publish returned
        self._decided = 0
        self._swap_thread: threading.Thread | None = None
        self.pub = a.publisher(topics["commands"], COMMANDS_TYPE)
        # a map waiting for the state at its stamp is decided by the Imu / JointState that completes it. Deep queues:
        # while a decision runs, a 200 Hz IMU must not push the sample at a map's stamp out of a depth-5 history.
        # Best effort by default (what an IMU driver publishes); imu_reliable for a reliable bag player, where a
        # lost reading would give a map an older pitch than ``flipper replay`` gives it
        a.subscribe(topics["imu"], "sensor_msgs/msg/Imu", lambda m: self._publish(self.runtime.on_imu(m, time.monotonic())),
                    qos=1000 if a.config.imu_reliable else _sensor_qos(100))
        a.subscribe(topics["joint_states"], "sensor_msgs/msg/JointState",
                    lambda m: self._publish(self.runtime.on_joint_states(m, time.monotonic())), qos=100)
        a.subscribe(topics["gridmap"], "grid_map_msgs/msg/GridMap", self.on_gridmap_cdr, raw=True)
        self._timers = {}
        self._make_timers(a.config)
        a.on_config_change(self.on_config_change)
        self._diag = DiagStatus
        a.diagnose(self.diagnose)

    def _make_timers(self, c: PolicyNodeConfig) -> None:
        for t in self._timers.values():
            self.adapter.node.destroy_timer(t)
        self._timers = {"tick": self.adapter.timer(1.0 / c.rate_hz, self.tick)}
        if c.checkpoint_poll > 0:
            self._timers["poll"] = self.adapter.timer(c.checkpoint_poll, self.poll_checkpoint)

    def _publish(self, command) -> None:
        """Publish a command; for a map's decision, record the time from the map's arrival to here."""
        if command is not None:
            self.pub.publish(command_message(command.positions))
            if command.arrived is not None:
                self._decided += 1
                if self._decided > 5:  # steady state: the first decisions warm torch up (tens of ms)
                    self.latency_ms.append((time.monotonic() - command.arrived) * 1e3)

    def on_gridmap_cdr(self, data: bytes) -> None:
        """Decode (leniently, as the adapter does; here so that the arrival time includes decoding), decide,
        publish."""
        from perception.messages import deserialize_lenient

        arrived = time.monotonic()
        try:
            gridmap = deserialize_lenient(data, "grid_map_msgs/msg/GridMap")
        except ValueError as exc:
            self.runtime.drop("gridmap", f"{self.runtime.topics['gridmap']}: {exc}")
            return
        self._publish(self.runtime.on_gridmap(gridmap, arrived))

    def tick(self) -> None:
        """The watchdog / rate-limit timer."""
        self._publish(self.runtime.tick(time.monotonic()))

    def poll_checkpoint(self) -> None:
        """A rewritten checkpoint is validated beside the executor (a load takes tens of ms), then swapped in."""
        if (self._swap_thread is None or not self._swap_thread.is_alive()) and self.runtime.checkpoint_changed():
            path = self.runtime.checkpoint or self.runtime.config.checkpoint
            self._swap_thread = threading.Thread(target=self.runtime.swap_checkpoint, args=(path,), daemon=True,
                                                 name="checkpoint-swap")
            self._swap_thread.start()

    def on_config_change(self, new: PolicyNodeConfig) -> None:
        """A parameter change: the runtime validates (a ValueError refuses it); the timers follow their periods."""
        old = self.runtime.config
        self.runtime.reconfigure(new)
        if (new.rate_hz, new.checkpoint_poll) != (old.rate_hz, old.checkpoint_poll):
            self._make_timers(new)

    def diagnose(self):
        """The runtime's status plus the arrival-to-publish latency of the last 1000 decisions."""
        level, message, values = self.runtime.status(time.monotonic())
        if self.latency_ms:
            p50, p99 = np.percentile(np.asarray(self.latency_ms), [50, 99])
            values.update({"latency p50 ms": f"{p50:.3f}", "latency p99 ms": f"{p99:.3f}",
                           "latency samples": str(len(self.latency_ms))})
        return self._diag(level, message, values)


def main(args=None) -> int:
    """``ros2 run flipper_learning policy_node`` (or the ``policy_node`` console script)."""
    from perception.ros_adapter import run_node

    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
