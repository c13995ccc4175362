"""rosbag2 files for the learning loop: an atomic recorder of the robot's topics and a tolerant reader.

``BagRecorder`` writes the topics of ARCHITECTURE.md ("Rosbag topics") with rosbags' ``Writer`` (rosbag2
version 9, MCAP or SQLite 3 storage) from numpy data, stamping every header and log time with the same
clock: simulated seconds plus a configurable epoch. It writes into a hidden folder beside the target and
renames it at the end, so a killed recording leaves no half bag at the target path.

``BagReader`` reads what it can: messages that do not deserialise are skipped and counted, a bag without
``metadata.yaml`` (a killed ``ros2 bag record``) or with a truncated or corrupt storage file is read
record by record (``perception.bag_salvage``) up to the damage, and a ``BagReport`` says what was skipped.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from perception import bag_salvage
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

__all__ = ["BagError", "BagMessage", "BagReader", "BagRecorder", "BagReport", "DEFAULT_EPOCH", "FRAMES",
           "MissingTopicError", "STORAGES", "Transform", "storage_of"]

# 2023-11-14 22:13:20 UTC: stamps of a recording from the proxy look like wall-clock stamps of a robot
DEFAULT_EPOCH = 1_700_000_000.0
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# REP 105 frames, plus the sensors' own (the URDF's imu_link; the lidar's optical centre)
FRAMES = {"map": "map", "odom": "odom", "base": "base_link", "lidar": "lidar", "imu": "imu_link"}

_TIME0 = QosTime(0, 0)
# /tf_static is latched (transient local): a late subscriber, or `ros2 bag play`, still gets the mounts
_LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, _TIME0, _TIME0,
               QosLiveliness.AUTOMATIC, _TIME0, False)


class BagError(ValueError):
    """A bag that cannot be written or read; the message names the bag and the problem."""


class MissingTopicError(BagError):
    """A bag lacks a topic that the caller needs; the message lists the topics the bag has."""


class Transform(NamedTuple):
    """One tf edge: ``child`` expressed in ``parent``; ``quat`` is (w, x, y, z) as in ``sim``."""

    parent: str
    child: str
    translation: Sequence[float]
    quat: Sequence[float]


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

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> BagRecorder:
        """Start writing into a hidden temporary folder beside ``path``; returns self."""
        if self.path.exists():
            raise BagError(f"{self.path} exists already; bags are never overwritten, choose another --out")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the temporary folder holds a bag folder of the final name: rosbag2 names its storage file after it
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent))
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
        tmp.rmdir()
        self._tmp = None
        return self.path

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


# ------------------------------------------------------------------------------------------ reading
class BagMessage(NamedTuple):
    """One message read from a bag: topic, log time (ns since the Unix epoch), the deserialised message."""

    topic: str
    log_ns: int
    msg: Any


@dataclass
class BagReport:
    """What reading a bag found: its topics, what was read, what was skipped and why (JSON-ready)."""

    path: str
    topics: dict[str, str] = field(default_factory=dict)  # topic -> type name
    read: Counter = field(default_factory=Counter)  # topic -> messages delivered
    skipped: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # reason -> topic -> count
    errors: list[str] = field(default_factory=list)  # storage-level damage, in words
    salvaged: bool = False  # read record by record (no index, or a damaged file)

    def skip(self, reason: str, topic: str, n: int = 1) -> None:
        """Count ``n`` messages of ``topic`` skipped for ``reason``."""
        self.skipped[reason][topic] += n

    @property
    def n_skipped(self) -> int:
        """Messages skipped for any reason."""
        return sum(sum(c.values()) for c in self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        return {"path": self.path, "topics": dict(self.topics), "read": dict(self.read),
                "skipped": {r: dict(c) for r, c in self.skipped.items()}, "errors": list(self.errors),
                "salvaged": self.salvaged}


def describe_topics(topics: dict[str, str], counts: dict[str, int] | None = None) -> str:
    """'/a (type, n messages), /b (...)' for error messages; '(none)' for an empty bag."""
    if not topics:
        return "(none)"
    return ", ".join(f"{t} ({typ}" + (f", {counts[t]} messages)" if counts and t in counts else ")")
                     for t, typ in sorted(topics.items()))


def storage_of(path: str | Path) -> str:
    """'mcap' or 'sqlite3': the storage of a bag folder or file (by its storage files)."""
    files = bag_salvage.storage_files(Path(path))
    if not files:
        raise BagError(f"{path}: no .mcap or .db3 storage file found")
    return "sqlite3" if files[0].suffix == ".db3" else "mcap"


class BagReader:
    """Reads messages of chosen topics from a bag folder, or a single ``.mcap``/``.db3`` file.

    An intact bag is read through rosbags' indexed reader (messages in log-time order). A bag that
    rosbags cannot open, or whose reading breaks off, is read record by record from its storage files
    (file order, which is arrival order for recorders) up to the damage; ``report.errors`` says where.
    Messages that fail to deserialise, or whose type is unknown, are skipped and counted.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag (a rosbag2 folder, .mcap or .db3 file)")
        self.report = BagReport(str(self.path))
        self._reader: Reader | None = None
        self._counts: dict[str, int] = {}
        try:
            reader = Reader(self.path)
            reader.open()
            self._reader = reader
            for conn in reader.connections:
                self.report.topics.setdefault(conn.topic, conn.msgtype)
                self._counts[conn.topic] = self._counts.get(conn.topic, 0) + conn.msgcount
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types for damaged bags
            self.report.salvaged = True
            self.report.errors.append(f"rosbags could not open the bag ({exc}); reading it record by record")
            self._salvage_index()

    def _salvage_index(self) -> None:
        files = bag_salvage.storage_files(self.path)
        if not files:
            raise BagError(f"{self.path}: no .mcap or .db3 storage file found")
        for f in files:
            topics, err = bag_salvage.list_topics(f)
            for topic, typename in topics.items():
                self.report.topics.setdefault(topic, typename)
            if err:
                self.report.errors.append(f"{f.name}: {err}" if not err.startswith(f.name) else err)
        # metadata.yaml, where there is one, still says how many messages the bag held
        self._counts = bag_salvage.metadata_counts(self.path)

    def close(self) -> None:
        """Close the underlying rosbags reader (the report stays)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def custom_data(self) -> dict[str, str]:
        """The recorder's ``custom_data`` (metadata.yaml), e.g. world and seed of a proxy recording; may be empty."""
        data = bag_salvage.read_metadata(self.path).get("custom_data") if self.path.is_dir() else None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    @property
    def counts(self) -> dict[str, int]:
        """topic -> messages the bag's index (or its metadata.yaml, for a salvaged bag) says it holds; may be empty."""
        return dict(self._counts)

    @property
    def topics(self) -> dict[str, str]:
        """topic -> type name of every topic the bag has (as far as it could be read)."""
        return dict(self.report.topics)

    def require(self, topics: Iterable[str]) -> None:
        """Raise MissingTopicError naming the missing topics and listing the ones the bag has."""
        missing = [t for t in topics if t not in self.report.topics]
        if missing:
            raise MissingTopicError(f"{self.path}: no {', '.join(missing)} in the bag; its topics: "
                                    f"{describe_topics(self.report.topics, self._counts or None)}")

    def _decode(self, topic: str, typename: str, raw: bytes | memoryview) -> Any | None:
        store = typestore()
        if typename not in store.types:
            self.report.skip(f"unknown type {typename}", topic)
            return None
        try:
            return store.deserialize_cdr(raw, typename)
        except Exception:  # noqa: BLE001 - garbage CDR raises anything from struct.error to IndexError
            self.report.skip("does not deserialise", topic)
            return None

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Deserialised messages of ``topics`` (default: all), skipping what cannot be read (see ``report``)."""
        wanted = set(self.report.topics if topics is None else topics)
        delivered: Counter[tuple[str, int]] = Counter()
        if self._reader is not None:
            conns = [c for c in self._reader.connections if c.topic in wanted]
            try:
                for conn, log_ns, raw in self._reader.messages(connections=conns):
                    m = self._decode(conn.topic, conn.msgtype, raw)
                    delivered[(conn.topic, log_ns)] += 1
                    if m is not None:
                        self.report.read[conn.topic] += 1
                        yield BagMessage(conn.topic, log_ns, m)
                return
            except Exception as exc:  # noqa: BLE001 - storage damage surfaces as any of several types
                self.report.salvaged = True
                self.report.errors.append(f"reading broke off ({type(exc).__name__}: {exc}); "
                                          "reading the rest record by record")
        # record by record; what the indexed pass delivered before it broke off is not repeated
        errors: list[str] = []
        for f in bag_salvage.storage_files(self.path):
            for topic, typename, log_ns, raw in bag_salvage.iter_records(f, wanted, errors):
                if delivered[(topic, log_ns)]:
                    delivered[(topic, log_ns)] -= 1
                    continue
                m = self._decode(topic, typename, raw)
                if m is not None:
                    self.report.read[topic] += 1
                    yield BagMessage(topic, log_ns, m)
        self.report.errors.extend(e for e in errors if e not in self.report.errors)
        for topic in sorted(wanted):  # what the bag's index promised but could not be read
            seen = self.report.read[topic] + sum(c[topic] for c in self.report.skipped.values())
            if self._counts.get(topic, 0) > seen:
                self.report.skip("lost to storage damage", topic, self._counts[topic] - seen)
