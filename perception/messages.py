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
    "TF", "TF_STATIC", "TOPIC_TYPES", "header", "imu_pitch_roll", "joint_positions", "msg", "stamp", "to_nanoseconds",
    "to_seconds", "typestore",
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


# rclpy (Fast CDR) pads differently from rosbags: after a trailing empty float64 sequence (JointState with
# effort=[], Float64MultiArray with data=[]) it appends 4 more bytes, which rosbags' strict size check
# rejects. Up to 3 bytes of final padding plus one 8-byte alignment step are accepted here, nothing more.
_LENIENT_TRAILING = 3 + 8


def deserialize_lenient(data: bytes | memoryview, typename: str) -> Any:
    """Decode CDR ``data`` of ``typename`` (a live message from rclpy, or a bag's) with this typestore.

    As rosbags' ``deserialize_cdr`` but accepting the few extra padding bytes rclpy writes after a trailing
    empty sequence. Raises ``ValueError`` naming the type and the problem for anything else (bad
    encapsulation header, truncated or oversized data, invalid strings)."""
    raw = bytes(data)
    if len(raw) < 4 or raw[:2] not in (b"\x00\x00", b"\x00\x01"):
        raise ValueError(f"a {typename} message has no valid CDR header (first bytes {raw[:4].hex() or 'none'}, "
                         f"{len(raw)} bytes)")
    try:
        msgdef = typestore().get_msgdef(typename)
    except KeyError:
        raise ValueError(f"unknown message type {typename!r}") from None
    read = msgdef.deserialize_cdr_le if raw[1] else msgdef.deserialize_cdr_be
    try:
        message, pos = read(raw[4:], 0, msgdef.cls, typestore())
    except Exception as exc:  # noqa: BLE001 - garbage raises struct.error, IndexError, UnicodeDecodeError, ...
        raise ValueError(f"a {typename} message does not deserialise ({type(exc).__name__}: {exc})") from None
    extra = len(raw) - 4 - pos
    if extra < 0 or extra > _LENIENT_TRAILING:
        raise ValueError(f"a {typename} message has {len(raw)} bytes but its fields take {pos + 4} "
                         f"(more than {_LENIENT_TRAILING} bytes of padding left over)")
    return message


# ------------------------------------------------------------------ robot state as the policy reads it
def imu_pitch_roll(imu: Any) -> tuple[float, float] | None:
    """(pitch, roll) of a sensor_msgs/Imu orientation (REP 103, ``sim.safety.euler_from_quat``), or None for a NaN or
    all-zero quaternion, which is no rotation. The one reading of the policy's pitch and roll: ``policy_node``,
    ``sim2real_node`` and ``flipper replay --policy`` share it, so the live and the offline decisions cannot diverge."""
    import numpy as np  # on first use: the typestore users of this module need neither

    from sim.safety import euler_from_quat

    q = imu.orientation
    wxyz = np.array([q.w, q.x, q.y, q.z], dtype=float)
    if not (np.all(np.isfinite(wxyz)) and np.abs(wxyz).sum() > 0):
        return None
    roll, pitch, _ = euler_from_quat(wxyz)
    return pitch, roll


def joint_positions(joint_states: Any, joints: tuple[str, ...] | list[str]) -> Any:
    """The positions of ``joints`` (in that order) in a sensor_msgs/JointState as a float array, or a string saying
    what is wrong: a joint missing, positions and names of different lengths, or a non-finite position."""
    import numpy as np

    names = list(joint_states.name)
    missing = [j for j in joints if j not in names]
    if missing:
        return f"missing joint(s) {missing} (has {names})"
    if len(joint_states.position) != len(names):
        return f"{len(joint_states.position)} positions for {len(names)} names"
    angles = np.asarray(joint_states.position, dtype=float)[[names.index(j) for j in joints]]
    return angles if np.all(np.isfinite(angles)) else f"non-finite position(s) {angles.tolist()} of {list(joints)}"
