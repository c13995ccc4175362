"""What ``policy_node`` is configured by and how it reads its state inputs (no ROS import).

``PolicyNodeConfig``: every field is a ROS parameter of the same name, with its description and allowed range
in the field's metadata (read by the rclpy adapter, ``perception.ros_adapter``); an impossible value or
combination raises ValueError naming each problem, so the node refuses it at start and on ``set_parameters``.

``pitch_roll`` and ``flipper_angles`` read sensor_msgs/Imu and sensor_msgs/JointState exactly as
``flipper replay --policy`` does (both are ``perception.messages``' readers, shared with ``sim2real_node`` and
``flipper_control.learning.bags.replay``), so the live policy and the offline replay see the same scalars.
The runtime that uses them (decisions, watchdog, hot swap) is ``flipper_control.policy_runtime``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from perception.messages import imu_pitch_roll, joint_positions
from sim.robot import FLIPPER_NAMES, RobotSpec

__all__ = ["JOINT_NAMES", "PolicyNodeConfig", "flipper_angles", "pitch_roll"]

JOINT_NAMES = tuple(f"{n}_joint" for n in FLIPPER_NAMES)  # the URDF's joint names, the policy's order


def _param(default, description: str, lo: float | None = None, hi: float | None = None, read_only: bool = False,
           **kw):
    """A config field carrying the ROS parameter's description, range and read-only flag (read by the rclpy
    adapter)."""
    meta = {"description": description, "read_only": read_only}
    if lo is not None:
        meta["range"] = (lo, hi)
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(frozen=True)
class PolicyNodeConfig:
    """Everything ``policy_node`` is configured by (each field is a ROS parameter of the same name)."""

    checkpoint: str = _param("", "policy checkpoint (safetensors + JSON sidecar); empty: hold the safe posture "
                                 "until one is set; the files are watched and a rewritten checkpoint is swapped in")
    gan_checkpoint: str = _param("", "CycleGAN checkpoint whose G (sim -> real) transforms every DEM before the "
                                     "policy (for simulation runs); empty: none")
    gan_seed: int = _param(0, "seed of G's per-DEM noise", 0, 2**31 - 1)
    rate_hz: float = _param(10.0, "watchdog / rate-limit timer rate (decisions are made on every GridMap)", 0.1, 1000.0)
    gridmap_timeout: float = _param(0.5, "s without a valid GridMap before the safe posture", 0.01, 60.0)
    imu_timeout: float = _param(0.25, "s without a valid Imu before the safe posture", 0.01, 60.0)
    joint_states_timeout: float = _param(0.5, "s without a valid JointState before the safe posture", 0.01, 60.0)
    max_rate: float = _param(1.0, "rad/s: the most a command moves per second (a little above Absolem's 0.8 rad/s "
                                  "flipper motors, so it never slows a motor that could follow); 0: no rate limit",
                             0.0, 100.0)
    joint_lower: float = _param(RobotSpec.flipper_lower, "rad: lower joint limit every command is clamped to", -math.pi,
                                math.pi)
    joint_upper: float = _param(RobotSpec.flipper_upper, "rad: upper joint limit", -math.pi, math.pi)
    safe_posture: tuple[float, ...] = _param((0.0, 0.0, 0.0, 0.0), "rad: the posture on stale input, an all-NaN DEM "
                                             "or a policy error, order front-left, front-right, rear-left, rear-right")
    flipper_joints: tuple[str, ...] = _param(JOINT_NAMES, "JointState names of the four flippers, order front-left, "
                                             "front-right, rear-left, rear-right")
    controller_joints: tuple[str, ...] = _param(JOINT_NAMES, "the forward position controller's 'joints' parameter: "
                                                "the order of the command vector (a permutation of flipper_joints)")
    layer: str = _param("elevation", "GridMap layer holding the DEM")
    checkpoint_poll: float = _param(1.0, "s between checks of the checkpoint files for a rewrite; 0: never", 0.0, 3600.0)
    state_history: float = _param(2.0, "s of Imu / JointState kept to find the state at a DEM's stamp", 0.1, 60.0)
    state_wait: float = _param(0.05, "s a GridMap may wait for the Imu and JointState stamped at or after it (queued "
                                     "behind it in the executor); then it is decided with the latest; 0: never wait",
                               0.0, 1.0)
    imu_reliable: bool = _param(False, "subscribe to the Imu reliably (a bag player that publishes reliably: no "
                                       "reading lost); an IMU driver publishes best effort, which a reliable "
                                       "subscription never receives. Read at start", read_only=True)

    def __post_init__(self) -> None:
        for name in ("safe_posture", "flipper_joints", "controller_joints"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = []
        for f in fields(self):
            rng = f.metadata.get("range")
            value = getattr(self, f.name)
            if rng is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                        and math.isfinite(value) and rng[0] <= value <= rng[1]):
                problems.append(f"{f.name} must lie in [{rng[0]:g}, {rng[1]:g}], got {value!r}")
        if not problems and not self.joint_lower < self.joint_upper:
            problems.append(f"joint_lower < joint_upper is required, got [{self.joint_lower}, {self.joint_upper}]")
        posture = self.safe_posture
        if len(posture) != 4 or not all(isinstance(a, (int, float)) and math.isfinite(a) for a in posture):
            problems.append(f"safe_posture must be 4 finite angles (rad), got {list(posture)}")
        elif not problems and not all(self.joint_lower <= a <= self.joint_upper for a in posture):
            problems.append(f"safe_posture {list(posture)} leaves the joint range [{self.joint_lower}, {self.joint_upper}]")
        joints = self.flipper_joints
        if len(joints) != 4 or len(set(joints)) != 4 or not all(isinstance(j, str) and j for j in joints):
            problems.append(f"flipper_joints must be 4 different joint names, got {list(joints)}")
        elif sorted(self.controller_joints) != sorted(joints):
            problems.append(f"controller_joints {list(self.controller_joints)} must be a permutation of flipper_joints "
                            f"{list(joints)}")
        if not (isinstance(self.layer, str) and self.layer):
            problems.append("layer must be a non-empty string")
        if problems:
            raise ValueError("PolicyNodeConfig: " + "; ".join(problems))


def pitch_roll(imu: Any) -> tuple[float, float] | None:
    """(pitch, roll) of a sensor_msgs/Imu orientation as replay computes them, or None for a NaN / zero quaternion."""
    return imu_pitch_roll(imu)


def flipper_angles(joint_states: Any, joints: tuple[str, ...] = JOINT_NAMES) -> np.ndarray | str:
    """The four flipper angles of a sensor_msgs/JointState in ``joints`` order, or a string saying what is wrong."""
    return joint_positions(joint_states, joints)
