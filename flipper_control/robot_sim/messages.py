"""What the simulated robot publishes, as rosbags typestore dataclasses, built by the recorder's own builders.

``MessageSink`` is a ``perception.bag_writer.BagRecorder`` that keeps the messages instead of writing a bag:
every message (PointCloud2, Imu, JointState, TFMessage, GridMap) is built by the very methods that
``flipper record`` (``flipper_control.learning.bags.record_proxy_run``) writes with, so a live
``robot_sim_node`` and a recorded bag carry identical messages for identical proxy samples
(``test/test_robot_sim.py`` compares their CDR bytes).

``write_initial`` and ``write_step`` (into a bag's ``BagRecorder`` or a ``MessageSink``; ``initial_messages`` and
``step_messages`` return what a sink collected) are the sequence of one run as ``record_proxy_run`` writes it:
/tf_static once, then per proxy substep /tf (map -> odom drift, odom -> base_link) and /imu/data, per control
step /joint_states and /points (the lidar lines of that step, in the lidar frame). ``with_clock`` adds a
/clock message before each substep's /tf, for nodes that run on ``use_sim_time``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from perception.bag_io import DEFAULT_EPOCH, FRAMES, Transform
from perception.bag_writer import BagRecorder
from perception.messages import msg, stamp
from sim.robot import FLIPPER_NAMES
from sim.safety import euler_from_quat

__all__ = ["CLOCK", "JOINT_NAMES", "MessageSink", "initial_messages", "static_transforms", "step_messages", "write_initial",
           "write_sample", "write_step"]

CLOCK = "/clock"
# the URDF's (sim.urdf) and the flipper controller's joint order; equal to learning.bags.JOINT_NAMES
JOINT_NAMES = tuple(f"{n}_joint" for n in FLIPPER_NAMES)


class MessageSink(BagRecorder):
    """A ``BagRecorder`` whose ``write`` collects ``(topic, message)`` pairs in ``messages`` instead of writing
    a bag: the message builders (``points``, ``imu``, ``tf``, ...) are inherited unchanged. Stamps are
    ``epoch + simulated seconds``, as in a recording."""

    def __init__(self, epoch: float = DEFAULT_EPOCH):
        # the recorder's constructor only checks and stores; nothing is opened for a sink
        super().__init__(Path("<live>"), "mcap", epoch)
        self.messages: list[tuple[str, Any]] = []

    def write(self, topic: str, t: float, message: Any, msgtype: str | None = None, log_ns: int | None = None) -> Any:
        """Keep ``message`` for ``topic`` (``t``, ``msgtype`` and ``log_ns`` only matter to a bag)."""
        self.messages.append((topic, message))
        self.counts[topic] += 1
        return message

    def take(self) -> list[tuple[str, Any]]:
        """The messages collected since the last ``take``, in publishing order."""
        out, self.messages = self.messages, []
        return out


def write_sample(rec: BagRecorder, s, with_clock: bool = False) -> None:
    """/tf and /imu/data of one proxy substep (as ``learning.bags._record_sample``): the drift as map -> odom,
    the true pose as odom -> base_link, the true orientation, rates and specific force; /clock first if asked."""
    if with_clock:
        rec.write(CLOCK, s.time, msg("rosgraph_msgs/msg/Clock")(clock=stamp(rec.seconds(s.time))),
                  msgtype="rosgraph_msgs/msg/Clock")
    t_map_odom, q_map_odom = s.map_to_odom
    rec.tf(s.time, [Transform(FRAMES["map"], FRAMES["odom"], t_map_odom, q_map_odom),
                    Transform(FRAMES["odom"], FRAMES["base"], s.true_position, s.true_quat)])
    rec.imu(s.time, s.true_quat, s.angular_velocity, s.linear_acceleration)


def static_transforms(proxy) -> list[Transform]:
    """The sensor mounts (base_link -> lidar, base_link -> imu_link), as /tf_static carries them."""
    return [Transform(FRAMES["base"], FRAMES["lidar"], proxy.lidar.mount, (1.0, 0.0, 0.0, 0.0)),
            Transform(FRAMES["base"], FRAMES["imu"], (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0))]


def write_initial(rec: BagRecorder, proxy, with_clock: bool = False) -> None:
    """Write the messages of a freshly reset proxy into ``rec`` (a bag's ``BagRecorder`` or a ``MessageSink``):
    /tf_static, the start sample's /tf and /imu/data, /joint_states and the warm-up turn of the lidar (with the
    lines of a ``lead_in``, in base_link at the start pose) as one cloud at t = 0 -- the sequence ``record_proxy_run``
    writes."""
    rec.tf(0.0, static_transforms(proxy), static=True)
    s = proxy.sample
    write_sample(rec, s, with_clock)
    rec.joint_states(s.time, JOINT_NAMES, s.flipper_angles, s.flipper_velocities)
    rec.points(s.time, proxy.warmup_scan.points - proxy.lidar.mount)


def write_step(rec: BagRecorder, proxy, with_clock: bool = False) -> bool:
    """Write the messages of the proxy's last ``step`` into ``rec``: per substep /tf and /imu/data, then
    /joint_states and /points of the whole step. False (nothing written) when the step simulated nothing."""
    step = proxy.last_step
    if step is None or not step.samples:
        return False
    for s in step.samples:
        write_sample(rec, s, with_clock)
    s = step.samples[-1]
    rec.joint_states(s.time, JOINT_NAMES, s.flipper_angles, s.flipper_velocities)
    rec.points(s.time, step.scan.points - proxy.lidar.mount)
    return True


def initial_messages(sink: MessageSink, proxy, with_clock: bool = True) -> list[tuple[str, Any]]:
    """``write_initial`` into ``sink``; returns the messages in publishing order."""
    write_initial(sink, proxy, with_clock)
    return sink.take()


def step_messages(sink: MessageSink, proxy, with_clock: bool = True) -> list[tuple[str, Any]]:
    """``write_step`` into ``sink``; returns the messages (empty when the run had ended)."""
    write_step(sink, proxy, with_clock)
    return sink.take()


def exact_map_message(sink: MessageSink, proxy, topic: str) -> list[tuple[str, Any]]:
    """The simulator's exact DEM (what ``flipper eval --reality sim`` feeds the policy) as a GridMap in the map
    frame around the true pose, on ``topic``."""
    inner = proxy.sim
    obs = inner.observation()
    position, quat = inner.pose()
    yaw = euler_from_quat(quat)[2]
    sink.elevation_map(obs.time, obs.dem, position, yaw, FRAMES["map"], proxy.dem_spec, topic=topic)
    return sink.take()


def count_topics(messages: list[tuple[str, Any]]) -> Counter[str]:
    """Messages per topic (for diagnostics and tests)."""
    return Counter(topic for topic, _ in messages)
