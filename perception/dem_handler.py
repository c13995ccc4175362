"""The DEM handler: point clouds and tf in, robot-centric DEMs and GridMap messages out (no ROS import).

One pure core runs live under rclpy (``perception.dem_node``), offline over a rosbag (``flipper replay``,
``flipper ingest``) and in tests. It keeps the transforms of /tf and /tf_static in a small buffer
(``TfBuffer``: latest at or before a stamp), and for each PointCloud2 it reads the points
(``pointcloud.cloud_to_xyz``), removes returns from the robot itself (body and flippers at the latest
/joint_states, in base_link at the cloud's stamp), moves the rest into the fixed frame (``map`` by
default: REP 105's map -> odom -> base_link), fuses them into a bounded ``PointMap`` (optional) and
builds the DEM around base_link with ``DemBuilder``. Bad input -- a malformed cloud, a missing or stale
transform, an empty or all-NaN cloud with nothing fused before it -- is skipped with a warning that names
the problem, counted per reason in ``skips``, and processing goes on. An empty cloud after earlier returns
is normal for a rotating lidar (a slice facing the sky): its DEM comes from the point map alone, counted
in ``from_map_only``.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perception.dem_builder import DemBuilder, DemBuilderConfig, RobotPose
from perception.gridmap import dem_center, dem_to_gridmap
from perception.messages import msg, to_nanoseconds, typestore
from perception.point_map import PointMap
from perception.pointcloud import CloudError, cloud_to_xyz
from sim.robot import FLIPPER_NAMES, RobotSpec
from sim.rotations import quat_multiply, quat_to_matrix

__all__ = ["DemHandler", "DemHandlerConfig", "DemResult", "TfBuffer", "TransformError", "SKIP_REASONS"]

log = logging.getLogger(__name__)

# skip reasons, the keys of DemHandler.skips
MALFORMED, EMPTY, NO_TRANSFORM = "malformed cloud", "empty cloud", "missing transform"
BAD_TRANSFORM, UNDECODABLE = "bad transform", "undecodable message"
SKIP_REASONS = (MALFORMED, EMPTY, NO_TRANSFORM, BAD_TRANSFORM, UNDECODABLE)
_NS = 1_000_000_000


class TransformError(LookupError):
    """A transform that the buffer cannot give; the message names the frames, the stamp and why."""


Pose = tuple[np.ndarray, np.ndarray]  # (translation (3,), quaternion (w, x, y, z)): child expressed in parent


def _compose(a: Pose, b: Pose) -> Pose:
    """a o b: first b, then a (p_parent = R_a (R_b p + t_b) + t_a)."""
    return a[0] + quat_to_matrix(a[1]) @ b[0], quat_multiply(a[1], b[1])


def _inverse(a: Pose) -> Pose:
    conj = a[1] * np.array([1.0, -1.0, -1.0, -1.0])
    return -(quat_to_matrix(conj) @ a[0]), conj


_IDENTITY: Pose = (np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))


class TfBuffer:
    """A tf tree of timed edges (child -> parent); ``lookup`` composes the edges at one stamp.

    Each dynamic edge keeps ``cache_s`` seconds of history before its newest transform; a lookup takes,
    per edge, the latest transform at or before the stamp (no interpolation: a live node never waits
    for a future transform) and refuses one older than ``max_age_s``. Static edges hold at all times.
    """

    def __init__(self, cache_s: float = 30.0):
        self.cache_ns = int(cache_s * _NS)
        self._parent: dict[str, str] = {}
        self._static: dict[str, Pose] = {}
        self._times: dict[str, list[int]] = {}
        self._poses: dict[str, list[Pose]] = {}

    @property
    def frames(self) -> set[str]:
        """Every frame named by a transform so far."""
        return set(self._parent) | set(self._parent.values())

    def set_transform(self, parent: str, child: str, t_ns: int, translation, quat_wxyz, static: bool = False) -> None:
        """Add ``child`` expressed in ``parent`` at ``t_ns`` (a new parent replaces the old edge, as in tf2)."""
        if not parent or not child or parent == child:
            raise ValueError(f"a transform needs two different, non-empty frames, got {parent!r} -> {child!r}")
        q = np.asarray(quat_wxyz, dtype=float)
        p = np.asarray(translation, dtype=float)
        norm = float(np.linalg.norm(q))
        if not (np.all(np.isfinite(p)) and math.isfinite(norm) and norm > 1e-9):
            raise ValueError(f"transform {parent} -> {child}: non-finite translation or zero quaternion")
        pose = (p, q / norm)
        if self._parent.get(child, parent) != parent:
            self._static.pop(child, None)
            self._times.pop(child, None)
            self._poses.pop(child, None)
        self._parent[child] = parent
        if static:
            self._static[child] = pose
            return
        times = self._times.setdefault(child, [])
        poses = self._poses.setdefault(child, [])
        i = bisect.bisect_right(times, t_ns)
        times.insert(i, t_ns)
        poses.insert(i, pose)
        cut = bisect.bisect_left(times, times[-1] - self.cache_ns)
        if cut > 64:  # trim in blocks: one deletion per 64 transforms, not one per transform
            del times[:cut], poses[:cut]

    def add_message(self, tf_message: Any, static: bool = False) -> list[str]:
        """Add every valid transform of a tf2_msgs/TFMessage; returns the problems of those it rejected."""
        problems = []
        for ts in tf_message.transforms:
            tr, rot = ts.transform.translation, ts.transform.rotation
            try:
                self.set_transform(ts.header.frame_id, ts.child_frame_id, to_nanoseconds(ts.header.stamp),
                                   (tr.x, tr.y, tr.z), (rot.w, rot.x, rot.y, rot.z), static)
            except ValueError as exc:
                problems.append(str(exc))
        return problems

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent and len(chain) <= len(self._parent):
            chain.append(self._parent[chain[-1]])
        return chain

    def _edge(self, child: str, t_ns: int, max_age_ns: int | None) -> Pose:
        if child in self._static:
            return self._static[child]
        parent, times = self._parent[child], self._times[child]
        i = bisect.bisect_right(times, t_ns) - 1
        if i < 0:
            raise TransformError(f"no {parent} -> {child} transform at or before t = {t_ns / _NS:.3f} s "
                                 f"(the first is at {times[0] / _NS:.3f} s)")
        if max_age_ns is not None and t_ns - times[i] > max_age_ns:
            raise TransformError(f"the latest {parent} -> {child} transform before t = {t_ns / _NS:.3f} s is "
                                 f"{(t_ns - times[i]) / _NS:.3f} s old (more than {max_age_ns / _NS:g} s)")
        return self._poses[child][i]

    def covers(self, target: str, source: str, t_ns: int) -> bool:
        """Whether the two frames are connected and every dynamic edge between them has a transform at or
        after ``t_ns``: then no later /tf can change ``lookup(target, source, t_ns)`` (what tf2's message
        filter waits for before it hands a message on)."""
        if target not in self.frames or source not in self.frames:
            return False
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            return False
        edges = up_source[:up_source.index(common)] + up_target[:up_target.index(common)]
        return all(e in self._static or self._times[e][-1] >= t_ns for e in edges)

    def lookup(self, target: str, source: str, t_ns: int, max_age_s: float | None = None) -> Pose:
        """Pose of frame ``source`` in frame ``target`` at ``t_ns``: maps points in source to target."""
        for frame in (target, source):
            if frame not in self.frames:
                raise TransformError(f"frame {frame!r} has not been received on /tf or /tf_static "
                                     f"(known frames: {sorted(self.frames) or 'none'})")
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            raise TransformError(f"frames {source!r} and {target!r} are not connected (their roots: "
                                 f"{' -> '.join(up_source)}; {' -> '.join(up_target)})")
        max_age = None if max_age_s is None else int(max_age_s * _NS)

        def to_ancestor(chain: list[str]) -> Pose:
            pose = _IDENTITY
            for frame in chain[:chain.index(common)]:
                pose = _compose(self._edge(frame, t_ns, max_age), pose)
            return pose

        return _compose(_inverse(to_ancestor(up_target)), to_ancestor(up_source))


@dataclass(frozen=True)
class DemHandlerConfig:
    """What the handler builds and from what.

    ``fixed_frame``: the z-up frame the point map and the GridMap live in (``map``, or ``odom`` to keep
    SLAM corrections out of the map). ``accumulate``: fuse clouds into a ``PointMap`` (a rotating lidar
    sweeps the ground ahead only once every few seconds; without fusion each DEM shows one slice).
    ``tf_max_age``: a transform older than this before a cloud's stamp counts as missing.
    ``self_filter``: drop returns inside the robot's boxes (flippers at the latest /joint_states;
    only the rigid body box until joint states arrive), ``self_filter_margin`` around them.
    """

    fixed_frame: str = "map"
    base_frame: str = "base_link"
    builder: DemBuilderConfig = field(default_factory=DemBuilderConfig)
    accumulate: bool = True
    map_voxel: float = 0.05
    map_max_bytes: int = 1 << 30
    tf_max_age: float = 0.5
    tf_cache: float = 30.0
    self_filter: bool = True
    self_filter_margin: float = 0.05
    flipper_joints: tuple[str, ...] = tuple(f"{n}_joint" for n in FLIPPER_NAMES)

    def __post_init__(self) -> None:
        if not self.fixed_frame or not self.base_frame or self.fixed_frame == self.base_frame:
            raise ValueError(f"DemHandlerConfig: fixed_frame and base_frame must be two different frame names, got "
                             f"{self.fixed_frame!r} and {self.base_frame!r}")
        if not (self.map_voxel > 0 and self.map_max_bytes > 0):
            raise ValueError(f"DemHandlerConfig: map_voxel and map_max_bytes must be > 0, got {self.map_voxel}, "
                             f"{self.map_max_bytes}")
        if not (self.tf_max_age > 0 and self.tf_cache >= self.tf_max_age):
            raise ValueError(f"DemHandlerConfig: need tf_max_age > 0 and tf_cache >= tf_max_age (seconds), got "
                             f"{self.tf_max_age}, {self.tf_cache}")
        if self.self_filter_margin < 0 or len(self.flipper_joints) != len(FLIPPER_NAMES):
            raise ValueError(f"DemHandlerConfig: self_filter_margin must be >= 0 and flipper_joints name "
                             f"{len(FLIPPER_NAMES)} joints in {FLIPPER_NAMES} order, got {self.self_filter_margin}, "
                             f"{self.flipper_joints}")
        object.__setattr__(self, "flipper_joints", tuple(self.flipper_joints))


@dataclass(frozen=True)
class DemResult:
    """One built DEM: the array, its GridMap message (stamp = the cloud's), and base_link's pose in the fixed frame."""

    stamp_ns: int
    dem: np.ndarray
    gridmap: Any
    position: np.ndarray
    quat: np.ndarray
    n_points: int  # finite points in the cloud


class DemHandler:
    """Stateful core of the DEM node (see module docstring); feed it messages in arrival order."""

    WARN_FIRST, WARN_EVERY = 10, 100  # per reason: the first few skips, then every 100th (a stream of bad input)

    def __init__(self, config: DemHandlerConfig | None = None, robot: RobotSpec | None = None):
        self.config = c = config or DemHandlerConfig()
        self.tf = TfBuffer(c.tf_cache)
        self.builder = DemBuilder(c.builder)
        self.point_map = PointMap(c.map_voxel, c.map_max_bytes) if c.accumulate else None
        self.skips: Counter[str] = Counter()
        self.processed = 0
        self.from_map_only = 0  # DEMs built from the point map alone, for a cloud with no finite point
        self.flipper_angles: np.ndarray | None = None
        s = c.builder.dem
        # the DEM's farthest corner from base_link, plus room for its yaw: the part of the map a DEM can use
        self._crop_radius = math.hypot(max(s.front, s.rows * s.resolution - s.front), s.cols * s.resolution / 2) + 0.3
        self._boxes = None
        if c.self_filter:
            from sim.robot_boxes import RobotBoxes  # the robot's boxes with the flippers turned

            self._boxes = RobotBoxes(robot or RobotSpec())

    # ------------------------------------------------------------------ input
    def on_tf(self, tf_message: Any, static: bool = False) -> None:
        """A tf2_msgs/TFMessage from /tf (or /tf_static with ``static``); invalid transforms are skipped."""
        for problem in self.tf.add_message(tf_message, static):
            self._skip(BAD_TRANSFORM, problem)

    def on_joint_states(self, joint_states: Any) -> None:
        """A sensor_msgs/JointState; keeps the flipper angles when it names all four flipper joints."""
        names = list(joint_states.name)
        if all(j in names for j in self.config.flipper_joints) and len(joint_states.position) == len(names):
            pos = np.asarray(joint_states.position, dtype=float)
            self.flipper_angles = pos[[names.index(j) for j in self.config.flipper_joints]]

    def _skip(self, reason: str, problem: str) -> None:
        self.skips[reason] += 1
        n = self.skips[reason]
        if n <= self.WARN_FIRST or n % self.WARN_EVERY == 0:
            log.warning("DEM handler: skipping input (%s, %d so far): %s", reason, n, problem)

    def on_cloud(self, cloud: Any) -> DemResult | None:
        """A sensor_msgs/PointCloud2: the DEM at its stamp, or None when the cloud is skipped."""
        c = self.config
        t_ns = to_nanoseconds(cloud.header.stamp)
        where = f"cloud at t = {t_ns / _NS:.3f} s in frame {cloud.header.frame_id!r}"
        if t_ns < 0 or not 0 <= cloud.header.stamp.nanosec < _NS:  # a GridMap cannot carry it; the tf lookup is meaningless
            self._skip(MALFORMED, f"{where}: invalid stamp (sec {cloud.header.stamp.sec}, nanosec {cloud.header.stamp.nanosec})")
            return None
        try:
            xyz = cloud_to_xyz(cloud)
        except CloudError as exc:
            self._skip(MALFORMED, f"{where}: {exc}")
            return None
        # A rotating 2D lidar's slice that faces the sky or open space has no return. With a point map the
        # DEM at the new pose is still built from what was fused before, as the reality proxy does at every
        # step; without one (or before the first return) such a cloud could only give an all-NaN DEM.
        from_map_only = len(xyz) == 0 and self.point_map is not None and len(self.point_map) > 0
        if len(xyz) == 0 and not from_map_only:
            self._skip(EMPTY, f"{where}: no finite point (empty or all-NaN cloud)")
            return None
        try:
            base = self.tf.lookup(c.fixed_frame, c.base_frame, t_ns, c.tf_max_age)
            sensor = self.tf.lookup(c.fixed_frame, cloud.header.frame_id, t_ns, c.tf_max_age)
            in_base = _compose(_inverse(base), sensor)
        except TransformError as exc:
            self._skip(NO_TRANSFORM, f"{where}: {exc}")
            return None
        if self._boxes is not None:
            xyz = xyz[~self._robot_mask(xyz @ quat_to_matrix(in_base[1]).T + in_base[0])]
        points = xyz @ quat_to_matrix(sensor[1]).T + sensor[0]
        position, quat = base
        if self.point_map is not None:
            if len(points):
                self.point_map.add(points)
            points = self.point_map.crop(position, self._crop_radius)
        dem = self.builder.build(points, position, quat)
        yaw = RobotPose.from_quat(position, quat).yaw
        spec = c.builder.dem
        gm = dem_to_gridmap(dem, spec.resolution, dem_center((position[0], position[1]), yaw, spec), c.fixed_frame,
                            t_ns / _NS, yaw=yaw, z=float(position[2]))
        gm.header = msg("std_msgs/msg/Header")(stamp=cloud.header.stamp, frame_id=c.fixed_frame)  # exact, no float
        self.processed += 1
        self.from_map_only += from_map_only
        return DemResult(t_ns, dem, gm, position.copy(), quat.copy(), len(xyz))

    def _robot_mask(self, base_points: np.ndarray) -> np.ndarray:
        if self.flipper_angles is not None:
            return self._boxes.contains(base_points, self.flipper_angles, self.config.self_filter_margin)
        lo = np.asarray(self.config.builder.body_min) - self.config.self_filter_margin
        hi = np.asarray(self.config.builder.body_max) + self.config.self_filter_margin
        return np.all((base_points >= lo) & (base_points <= hi), axis=1)

    # ------------------------------------------------------------------ CDR, for the rclpy adapter
    def _decode(self, data: bytes, typename: str) -> Any | None:
        try:
            return typestore().deserialize_cdr(data, typename)
        except Exception as exc:  # noqa: BLE001 - garbage CDR raises anything
            self._skip(UNDECODABLE, f"a {typename} message does not deserialise ({type(exc).__name__}: {exc})")
            return None

    def on_tf_cdr(self, data: bytes, static: bool = False) -> None:
        """``on_tf`` for CDR bytes (rclpy ``raw=True``)."""
        m = self._decode(data, "tf2_msgs/msg/TFMessage")
        if m is not None:
            self.on_tf(m, static)

    def on_joint_states_cdr(self, data: bytes) -> None:
        """``on_joint_states`` for CDR bytes."""
        m = self._decode(data, "sensor_msgs/msg/JointState")
        if m is not None:
            self.on_joint_states(m)

    def on_cloud_cdr(self, data: bytes) -> bytes | None:
        """CDR PointCloud2 in, CDR grid_map_msgs/GridMap out (bytes, as rclpy publishes them), or None."""
        m = self._decode(data, "sensor_msgs/msg/PointCloud2")
        result = None if m is None else self.on_cloud(m)
        if result is None:
            return None
        return bytes(typestore().serialize_cdr(result.gridmap, "grid_map_msgs/msg/GridMap"))
