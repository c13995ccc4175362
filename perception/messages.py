"""The ROS 2 message model without rclpy: a rosbags typestore (Humble) with grid_map_msgs added.

Every converter, the recorder and the bag reader build and read messages as rosbags dataclasses from
this one typestore, so that what goes into a bag and what a live node publishes are the same types.
grid_map_msgs is in no built-in rosbags store; its definitions below are those of ANYbotics/grid_map's
ROS 2 branches (humble/jazzy: ``grid_map_msgs/msg/GridMap.msg`` and ``GridMapInfo.msg``, where the
header moved from GridMapInfo into GridMap).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.store import Typestore

__all__ = [
    "CMD_VEL", "ELEVATION_MAP", "FLIPPER_COMMANDS", "GRIDMAP", "GRIDMAP_INFO", "IMU", "JOINT_STATES", "POINTS",
    "TF", "TF_STATIC", "TOPIC_TYPES", "header", "msg", "stamp", "to_nanoseconds", "to_seconds", "typestore",
]

GRIDMAP_INFO = "grid_map_msgs/msg/GridMapInfo"
GRIDMAP = "grid_map_msgs/msg/GridMap"

# Field lists as in grid_map_msgs (humble); comments dropped, they carry no type information.
GRIDMAP_INFO_MSG = """\
float64 resolution
float64 length_x
float64 length_y
geometry_msgs/Pose pose
"""

GRIDMAP_MSG = """\
std_msgs/Header header
grid_map_msgs/GridMapInfo info
string[] layers
string[] basic_layers
std_msgs/Float32MultiArray[] data
uint16 outer_start_index
uint16 inner_start_index
"""

POINTS = "/points"
IMU = "/imu/data"
JOINT_STATES = "/joint_states"
TF = "/tf"
TF_STATIC = "/tf_static"
CMD_VEL = "/cmd_vel"
ELEVATION_MAP = "/elevation_map"
FLIPPER_COMMANDS = "/flipper_controller/commands"

TOPIC_TYPES: dict[str, str] = {
    POINTS: "sensor_msgs/msg/PointCloud2",
    IMU: "sensor_msgs/msg/Imu",
    JOINT_STATES: "sensor_msgs/msg/JointState",
    TF: "tf2_msgs/msg/TFMessage",
    TF_STATIC: "tf2_msgs/msg/TFMessage",
    CMD_VEL: "geometry_msgs/msg/Twist",  # Humble's diff-drive / teleop convention (unstamped)
    ELEVATION_MAP: GRIDMAP,
    FLIPPER_COMMANDS: "std_msgs/msg/Float64MultiArray",  # forward_command_controller's ~/commands
}


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The ROS 2 Humble typestore with GridMapInfo and GridMap registered; one shared instance."""
    store = _rosbags_typestore(Stores.ROS2_HUMBLE)
    types = get_types_from_msg(GRIDMAP_INFO_MSG, GRIDMAP_INFO)
    types.update(get_types_from_msg(GRIDMAP_MSG, GRIDMAP))
    store.register(types)
    return store


def msg(typename: str) -> Any:
    """The message dataclass for ``typename`` (e.g. ``msg('sensor_msgs/msg/PointCloud2')``)."""
    try:
        return typestore().types[typename]
    except KeyError:
        hint = "write it as 'package/msg/Name', e.g. 'sensor_msgs/msg/Imu'"
        raise KeyError(f"unknown message type {typename!r}: {hint}") from None


def stamp(t_seconds: float) -> Any:
    """builtin_interfaces/msg/Time for ``t_seconds`` (>= 0), nanoseconds rounded to the nearest."""
    t = float(t_seconds)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"stamp: time must be finite and >= 0 s, got {t_seconds!r}")
    sec = math.floor(t)
    nanosec = round((t - sec) * 1e9)  # split first: t * 1e9 would lose ~100 ns at epoch times
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return msg("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def to_seconds(time_msg: Any) -> float:
    """Seconds of a builtin_interfaces/msg/Time."""
    return time_msg.sec + time_msg.nanosec * 1e-9


def to_nanoseconds(time_msg: Any) -> int:
    """Integer nanoseconds of a builtin_interfaces/msg/Time (what rosbag2 uses for log times)."""
    return time_msg.sec * 1_000_000_000 + time_msg.nanosec


def header(frame_id: str, t_seconds: float) -> Any:
    """std_msgs/msg/Header with ``frame_id`` and the stamp of ``t_seconds``."""
    return msg("std_msgs/msg/Header")(stamp=stamp(t_seconds), frame_id=frame_id)
