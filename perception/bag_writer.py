"""rosbag2 recording for the learning loop: ``BagRecorder`` writes the robot's topics atomically from numpy data.

``BagRecorder`` writes the topics of ARCHITECTURE.md ("Rosbag topics") with rosbags' ``Writer`` (rosbag2
version 9, MCAP or SQLite 3 storage) from numpy data, stamping every header and log time with the same
clock: simulated seconds plus a configurable epoch. It writes into a hidden folder beside the target and
renames it at the end, so a killed recording leaves no half bag at the target path; what a recording killed
outright leaves behind is found by ``perception.bag_partials``, and the next recorder into the folder warns of it.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Writer

from perception.bag_io import DEFAULT_EPOCH, FRAMES, STORAGES, BagError, Transform
from perception.bag_partials import PARTIAL_SUFFIX, WRITER_MARKER, PartialBag, partial_bags, writer_record
from perception.gridmap import dem_center, dem_to_gridmap
from perception.messages import (
    CMD_VEL,
    ELEVATION_MAP,
    FLIPPER_COMMANDS,
    IMU,
    JOINT_STATES,
    POINTS,
    TF,
    TF_STATIC,
    TOPIC_TYPES,
    header,
    msg,
    stamp,
    to_nanoseconds,
    typestore,
)
from perception.pointcloud import xyz_to_cloud
from sim.dem import DemSpec
from sim.io_utils import write_json_atomic

__all__ = ["BagRecorder"]

log = logging.getLogger(__name__)

_TIME0 = QosTime(0, 0)
# /tf_static is latched (transient local): a late subscriber, or `ros2 bag play`, still gets the mounts
_LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, _TIME0, _TIME0,
               QosLiveliness.AUTOMATIC, _TIME0, False)


def _vector3(v: Sequence[float]) -> Any:
    return msg("geometry_msgs/msg/Vector3")(x=float(v[0]), y=float(v[1]), z=float(v[2]))


def _quaternion(q_wxyz: Sequence[float]) -> Any:
    return msg("geometry_msgs/msg/Quaternion")(x=float(q_wxyz[1]), y=float(q_wxyz[2]), z=float(q_wxyz[3]),
                                              w=float(q_wxyz[0]))


class BagRecorder:
    """Writes one rosbag2 atomically; use as a context manager (an exception inside discards the bag).

    Times passed to the methods are simulated seconds; header stamps and log times are ``epoch + t``.
    ``path`` must not exist (as with ``ros2 bag record``).
    """

    def __init__(self, path: str | Path, storage: str = "mcap", epoch: float = DEFAULT_EPOCH,
                 custom_data: dict[str, str] | None = None):
        if storage not in STORAGES:
            raise BagError(f"unknown bag storage {storage!r}; use one of {', '.join(STORAGES)}")
        if not (math.isfinite(epoch) and epoch >= 0):
            raise BagError(f"bag epoch must be a finite number of seconds >= 0, got {epoch!r}")
        self.path = Path(path)
        self.storage, self.epoch = storage, float(epoch)
        self.custom_data = {str(k): str(v) for k, v in (custom_data or {}).items()}  # provenance in metadata.yaml
        self.counts: Counter[str] = Counter()
        self._connections: dict[str, Any] = {}
        self._tmp: Path | None = None
        self._writer: Writer | None = None
        self.leftovers: list[PartialBag] = []  # other recordings' .partial folders found beside path by open()

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> BagRecorder:
        """Start writing into a hidden temporary folder beside ``path``; returns self. Warns (logging) about
        ``.partial`` folders other recordings left there (``leftovers``)."""
        if self.path.exists():
            raise BagError(f"{self.path} exists already; bags are never overwritten, choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.leftovers = partial_bags(self.path.parent)
        self._warn_leftovers()
        # the temporary folder holds a bag folder of the final name: rosbag2 names its storage file after it
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=PARTIAL_SUFFIX, dir=self.path.parent))
        # who writes it, before anything else is in it: a folder is never taken for a leftover while we run
        write_json_atomic(self._tmp / WRITER_MARKER, writer_record())
        self._writer = Writer(self._tmp / self.path.name, version=9, storage_plugin=STORAGES[self.storage])
        for key, value in self.custom_data.items():
            self._writer.set_custom_data(key, value)
        self._writer.open()
        return self

    def close(self) -> Path:
        """Finish the bag (index, metadata.yaml) and move it to ``path``; returns ``path``."""
        if self._writer is None or self._tmp is None:
            raise BagError(f"{self.path}: recorder is not open")
        writer, tmp, self._writer = self._writer, self._tmp, None
        writer.close()
        if self.path.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise BagError(f"{self.path} appeared while recording; the recording was discarded")
        (tmp / self.path.name).rename(self.path)  # same file system: atomic
        (tmp / WRITER_MARKER).unlink(missing_ok=True)
        tmp.rmdir()
        self._tmp = None
        return self.path

    def _warn_leftovers(self) -> None:
        stale = [pb for pb in self.leftovers if pb.state == "stale"]
        unknown = [pb for pb in self.leftovers if pb.state == "unknown"]
        live = [pb for pb in self.leftovers if pb.state == "live"]
        if stale:
            same = [pb for pb in stale if pb.target == self.path]
            log.warning("%s: %d leftover folder(s) of killed recordings (writer gone)%s: %s; they hold half-written "
                        "bags: remove them with `rm -r` or --clean-partials (perception.bag_partials.remove_stale_partials)",
                        self.path.parent, len(stale), f", {len(same)} of them for {self.path.name}" if same else "",
                        ", ".join(pb.describe() for pb in stale))
        if unknown:
            log.warning("%s: %d .partial folder(s) of unknown writer (another host, or an older version), left alone: %s",
                        self.path.parent, len(unknown), ", ".join(pb.describe() for pb in unknown))
        if live:  # parallel recordings into one folder (the loop's workers) are normal: no warning
            log.info("%s: %d .partial folder(s) of recordings still running, left alone: %s",
                     self.path.parent, len(live), ", ".join(pb.describe() for pb in live))

    def abort(self) -> None:
        """Discard the recording; nothing is left at ``path``."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()  # rosbags' abort leaves files behind; the folder goes anyway
            except Exception:  # noqa: BLE001 - we are discarding: any writer state is fine
                pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> BagRecorder:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ writing
    def seconds(self, t: float) -> float:
        """The stamp (seconds since the Unix epoch) of simulated time ``t``."""
        return self.epoch + float(t)

    def write(self, topic: str, t: float, message: Any, msgtype: str | None = None, log_ns: int | None = None) -> Any:
        """Write a message built elsewhere at log time ``epoch + t`` (or exactly ``log_ns``, ns since the Unix
        epoch); the type defaults to TOPIC_TYPES'."""
        if self._writer is None:
            raise BagError(f"{self.path}: open the recorder (use it as a context manager) before writing")
        typename = msgtype or TOPIC_TYPES.get(topic)
        if typename is None:
            raise BagError(f"topic {topic!r} has no default type; pass msgtype= (known: {sorted(TOPIC_TYPES)})")
        conn = self._connections.get(topic)
        if conn is None:
            qos = [_LATCHED] if topic == TF_STATIC else []
            conn = self._writer.add_connection(topic, typename, typestore=typestore(), offered_qos_profiles=qos)
            self._connections[topic] = conn
        elif conn.msgtype != typename:
            raise BagError(f"topic {topic!r} was recorded as {conn.msgtype}, not {typename}")
        if log_ns is None:
            log_ns = to_nanoseconds(stamp(self.seconds(t)))
        self._writer.write(conn, log_ns, typestore().serialize_cdr(message, typename))
        self.counts[topic] += 1
        return message

    def points(self, t: float, xyz: np.ndarray, frame_id: str = FRAMES["lidar"], topic: str = POINTS) -> Any:
        """/points: an unorganised float32 cloud of (N, 3) points in ``frame_id``."""
        return self.write(topic, t, xyz_to_cloud(np.asarray(xyz), frame_id, self.seconds(t)))

    def imu(self, t: float, quat: Sequence[float], angular_velocity: Sequence[float],
            linear_acceleration: Sequence[float], frame_id: str = FRAMES["imu"], topic: str = IMU) -> Any:
        """/imu/data: orientation (w, x, y, z) in a gravity-aligned frame, rates and specific force in the IMU frame.
        Covariances are left zero ("unknown" in sensor_msgs/Imu)."""
        m = msg("sensor_msgs/msg/Imu")(
            header=header(frame_id, self.seconds(t)), orientation=_quaternion(quat),
            orientation_covariance=np.zeros(9), angular_velocity=_vector3(angular_velocity),
            angular_velocity_covariance=np.zeros(9), linear_acceleration=_vector3(linear_acceleration),
            linear_acceleration_covariance=np.zeros(9))
        return self.write(topic, t, m)

    def joint_states(self, t: float, names: Sequence[str], positions: Sequence[float],
                     velocities: Sequence[float] | None = None, topic: str = JOINT_STATES) -> Any:
        """/joint_states with positions (rad) and optional velocities (rad/s); efforts unknown (empty)."""
        m = msg("sensor_msgs/msg/JointState")(
            header=header("", self.seconds(t)), name=list(names), position=np.asarray(positions, dtype=np.float64),
            velocity=np.asarray(velocities if velocities is not None else [], dtype=np.float64),
            effort=np.zeros(0, dtype=np.float64))
        return self.write(topic, t, m)

    def tf(self, t: float, transforms: Iterable[Transform], static: bool = False) -> Any:
        """/tf (or /tf_static with ``static``): one TFMessage holding every transform, all stamped ``t``."""
        ts_type = msg("geometry_msgs/msg/TransformStamped")
        tf_type = msg("geometry_msgs/msg/Transform")
        items = [ts_type(header=header(tr.parent, self.seconds(t)), child_frame_id=tr.child,
                         transform=tf_type(translation=_vector3(tr.translation), rotation=_quaternion(tr.quat)))
                 for tr in transforms]
        return self.write(TF_STATIC if static else TF, t, msg("tf2_msgs/msg/TFMessage")(transforms=items))

    def cmd_vel(self, t: float, linear_x: float, angular_z: float = 0.0, topic: str = CMD_VEL) -> Any:
        """/cmd_vel: the tracks' drive command (m/s forward, rad/s about z)."""
        m = msg("geometry_msgs/msg/Twist")(linear=_vector3((linear_x, 0.0, 0.0)), angular=_vector3((0.0, 0.0, angular_z)))
        return self.write(topic, t, m)

    def flipper_commands(self, t: float, targets: Sequence[float], topic: str = FLIPPER_COMMANDS,
                         log_ns: int | None = None) -> Any:
        """/flipper_controller/commands: four flipper targets (rad) in FLIPPER_NAMES order."""
        dim = msg("std_msgs/msg/MultiArrayDimension")
        layout = msg("std_msgs/msg/MultiArrayLayout")(dim=[dim(label="flippers", size=len(targets), stride=len(targets))],
                                                      data_offset=0)
        m = msg("std_msgs/msg/Float64MultiArray")(layout=layout, data=np.asarray(targets, dtype=np.float64))
        return self.write(topic, t, m, log_ns=log_ns)

    def elevation_map(self, t: float, dem: np.ndarray, base_position: Sequence[float], yaw: float,
                      frame_id: str = FRAMES["map"], spec: DemSpec | None = None, topic: str = ELEVATION_MAP) -> Any:
        """/elevation_map: a robot-centric DEM as a GridMap centred on the DEM (``gridmap.dem_center``), its
        heights relative to ``base_position[2]`` (stored as the pose's z)."""
        spec = spec or DemSpec()
        center = dem_center((float(base_position[0]), float(base_position[1])), yaw, spec)
        gm = dem_to_gridmap(dem, spec.resolution, center, frame_id, self.seconds(t), yaw=yaw, z=float(base_position[2]))
        return self.write(topic, t, gm)
