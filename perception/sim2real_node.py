"""The sim -> real node: GridMap in, GridMap out through the CycleGAN's G (``perception.sim_to_real.SimToReal``).

For simulation runs (Gazebo, or any simulator whose DEM is too clean): the DEM layer of each GridMap goes through G
with its scalars -- pitch and roll of the latest /imu/data orientation and the four flipper angles of the latest
/joint_states -- and comes out real-looking (NaN where a real lidar would not see); header, info and any other
layers are kept. A G with the map-age input (``GanConfig.map_age_s``) also gets the time since the first GridMap
stamp the node saw (a stamp before it, e.g. after a simulator reset, starts the count again). Without
``gan_checkpoint`` the node is the identity (the map is only checked and passed on), the placeholder until a
generator exists. ``Sim2RealCore`` is the pure part (no ROS import); ``Sim2RealNode`` wires it to topics through
``perception.ros_adapter``. Default topics: ``/elevation_map_sim`` in, ``/elevation_map`` out (what ``policy_node``
reads), so a simulated DEM node only needs its output remapped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perception.gridmap import GridMapError, gridmap_to_dem, layers_to_gridmap
from perception.map_clock import MapClock
from perception.messages import ELEVATION_MAP, IMU, JOINT_STATES, imu_pitch_roll, joint_positions, to_nanoseconds
from sim.robot import FLIPPER_NAMES

__all__ = ["Sim2RealConfig", "Sim2RealCore", "Sim2RealNode", "main"]

JOINT_NAMES = tuple(f"{n}_joint" for n in FLIPPER_NAMES)
GRIDMAP_TYPE = "grid_map_msgs/msg/GridMap"
TOPICS = {
    "input_topic": ("/elevation_map_sim", "grid_map_msgs/GridMap input: the simulated DEM"),
    "output_topic": (ELEVATION_MAP, "grid_map_msgs/GridMap output: the DEM through G"),
    "imu_topic": (IMU, "sensor_msgs/Imu: pitch and roll for G's scalars"),
    "joint_states_topic": (JOINT_STATES, "sensor_msgs/JointState: flipper angles for G's scalars"),
}


@dataclass(frozen=True)
class Sim2RealConfig:
    """Parameters of ``sim2real_node`` (read at start)."""

    gan_checkpoint: str = field(default="", metadata={"description": "CycleGAN checkpoint whose G is applied; empty: "
                                                                      "the identity"})
    seed: int = field(default=0, metadata={"description": "seed of G's per-DEM noise", "range": (0, 2**31 - 1)})
    layer: str = field(default="elevation", metadata={"description": "the GridMap layer holding the DEM"})
    flipper_joints: tuple[str, ...] = field(default=JOINT_NAMES, metadata={
        "description": "JointState names of the flippers, order front-left, front-right, rear-left, rear-right"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "flipper_joints", tuple(self.flipper_joints))
        problems = []
        if not self.layer:
            problems.append("layer must be a non-empty layer name")
        if len(self.flipper_joints) != 4 or len(set(self.flipper_joints)) != 4:
            problems.append(f"flipper_joints must be 4 different joint names, got {list(self.flipper_joints)}")
        if problems:
            raise ValueError("Sim2RealConfig: " + "; ".join(problems))


class Sim2RealCore:
    """The pure part: feed messages in arrival order; ``on_gridmap`` returns the GridMap to publish or None."""

    WARN_FIRST, WARN_EVERY = 5, 100

    def __init__(self, config: Sim2RealConfig | None = None, transform=None, warn=None):
        """``transform``: a ``SimToReal``-like callable ``(dem, scalars) -> dem``; default G of ``gan_checkpoint``, or
        none (the identity). ``warn(text)`` receives the throttled warnings (default: Python logging)."""
        self.config = c = config or Sim2RealConfig()
        if transform is None and c.gan_checkpoint:
            from perception.sim_to_real import SimToReal

            try:
                transform = SimToReal.from_checkpoint(c.gan_checkpoint, c.seed)
            except Exception as exc:  # noqa: BLE001 - any load failure is a refusal at start, with its reason
                raise ValueError(f"gan_checkpoint {c.gan_checkpoint!r}: {type(exc).__name__}: {exc}") from None
        self.transform = transform
        self.map_clock = MapClock()  # the map's age, for a G that takes it (the time since the first GridMap)
        if warn is None:
            import logging

            warn = logging.getLogger(__name__).warning
        self._warn = warn
        self.pitch_roll: tuple[float, float] | None = None
        self.flippers: np.ndarray | None = None
        self.dropped: Counter[str] = Counter()
        self.published = 0

    def drop(self, kind: str, problem: str) -> None:
        """Count a dropped input and warn (the first few of each kind, then every 100th)."""
        self.dropped[kind] += 1
        if self.dropped[kind] <= self.WARN_FIRST or self.dropped[kind] % self.WARN_EVERY == 0:
            self._warn(f"sim2real: dropped {kind} ({self.dropped[kind]} so far): {problem}")

    def on_imu(self, imu: Any) -> None:
        """Keep pitch and roll of a finite, non-zero orientation (else drop it), read as policy_node reads them."""
        pr = imu_pitch_roll(imu)
        if pr is None:
            q = imu.orientation
            self.drop("imu", f"orientation {[q.w, q.x, q.y, q.z]} is not a rotation")
            return
        self.pitch_roll = pr

    def on_joint_states(self, js: Any) -> None:
        """Keep the four flipper angles (else drop the message, naming what is wrong), read as policy_node reads them."""
        angles = joint_positions(js, self.config.flipper_joints)
        if isinstance(angles, str):
            self.drop("joint_states", angles)
        else:
            self.flippers = angles

    def on_gridmap(self, gridmap: Any) -> Any | None:
        """The GridMap through G (header, info and other layers kept), the input itself without G, or None when
        it is dropped (malformed, or G's scalars not known yet)."""
        try:
            dem, meta = gridmap_to_dem(gridmap, self.config.layer)
        except GridMapError as exc:
            self.drop("gridmap", str(exc))
            return None
        if self.transform is None:
            self.published += 1
            return gridmap
        if self.pitch_roll is None or self.flippers is None:
            self.drop("gridmap", "no Imu and JointState yet: G needs pitch, roll and the flipper angles")
            return None
        scalars = np.concatenate((self.pitch_roll, self.flippers)).astype(np.float32)  # as the policy's proprio
        try:
            out = self.map_clock.apply(self.transform, dem, scalars, to_nanoseconds(gridmap.header.stamp))
        except Exception as exc:  # noqa: BLE001 - a DEM G cannot take (another shape) is dropped, the node goes on
            self.drop("gridmap", f"G failed on a {dem.shape[0]} x {dem.shape[1]} DEM: {type(exc).__name__}: {exc}")
            return None
        layers = {name: out if name == self.config.layer else gridmap_to_dem(gridmap, name)[0] for name in gridmap.layers}
        res = meta["resolution"]
        result = layers_to_gridmap(layers, res, meta["center"], meta["frame"], 0.0, meta["yaw"], meta["z"])
        result.header = gridmap.header  # the exact stamp (no float round trip)
        result.basic_layers = list(gridmap.basic_layers)
        self.published += 1
        return result


class Sim2RealNode:
    """``sim2real_node``: the rclpy wiring of ``Sim2RealCore``."""

    def __init__(self, node_name: str = "sim2real_node"):
        from perception.ros_adapter import ConfigError, DiagStatus, NodeAdapter

        self.adapter = a = NodeAdapter(node_name, Sim2RealConfig, static_params=TOPICS)
        try:
            self.core = Sim2RealCore(a.config, warn=a.logger.warning)
        except ValueError as exc:
            raise ConfigError(f"{node_name}: {exc}") from None
        a.on_config_change(self._refuse_changes)
        self.pub = a.publisher(a.param("output_topic"), GRIDMAP_TYPE)
        a.subscribe(a.param("imu_topic"), "sensor_msgs/msg/Imu", self.core.on_imu)
        a.subscribe(a.param("joint_states_topic"), "sensor_msgs/msg/JointState", self.core.on_joint_states)
        a.subscribe(a.param("input_topic"), GRIDMAP_TYPE, self.on_gridmap)
        identity = self.core.transform is None

        def diagnose():
            values = {"gan_checkpoint": a.config.gan_checkpoint or "(identity)", "published": str(self.core.published),
                      **{f"dropped {k}": str(v) for k, v in self.core.dropped.items()}}
            return DiagStatus(DiagStatus.OK, "identity (no generator)" if identity else "running G", values)

        a.diagnose(diagnose)

    @staticmethod
    def _refuse_changes(new) -> None:
        raise ValueError("sim2real_node reads its parameters at start; restart it to change them")

    def on_gridmap(self, gridmap: Any) -> None:
        out = self.core.on_gridmap(gridmap)
        if out is not None:
            self.pub.publish(out)


def main(args=None) -> int:
    """``ros2 run flipper_learning sim2real_node`` (or the ``sim2real_node`` console script)."""
    from perception.ros_adapter import run_node

    return run_node(Sim2RealNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

